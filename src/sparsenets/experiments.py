"""The jobs composed from the parts: build a mask, train a run (a `study.Run`), and write the files the DAG
declares.

Nothing here knows about Snakemake; MLflow is reached through `tracking.Tracking`, on a worker thread.
"""
from __future__ import annotations

import contextlib
import json
import os
import time
from concurrent.futures import Future, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from . import data
from .devices import claim_device, device_kind
from .io import write_json
from .masks import Mask, atomic_save
from .models import build_model
from .pruning import PruneInputs, build_mask, get_method
from .readers import load_torch
from .structure import StructureRecorder, layer_table, summary
from .study import Run
from .signals import TRACKING_WAIT_S, Terminated, stop_requested
from .tracking import KILLED_BY, Tracking, run_name
from .train import (NumericalError, Recipe, Result, previous_checkpoint, read_checkpoint, remove_checkpoints,
                    seeded_generator, train)

Log = Callable[[str], None]


def derive_seeds(seed: int) -> dict[str, int]:
    """Independent streams for weights, mask randomness, data order and fresh re-initialisation."""
    children = np.random.SeedSequence(int(seed)).spawn(4)
    names = ("weight_seed", "mask_seed", "data_seed", "reinit_seed")
    return {n: int(c.generate_state(1, dtype=np.uint32)[0]) for n, c in zip(names, children)}


def make_mask(model_name: str, dataset_file: str | os.PathLike, method: str, density: float, seed: int,
              out: str | os.PathLike, *, options: dict[str, Any] | None = None, device: str = "auto",
              previous: str | os.PathLike | None = None) -> Mask:
    """Build a method's mask on the model's initial weights for `seed` and save it to `out`; a nested method
    (phew-res) grows it from `previous`, its mask at the next sparser density."""
    dev = claim_device(device)  # "auto"/"cuda": a GPU no other job holds; "cuda:1" is taken as is
    ds = data.load(dataset_file)
    seeds = derive_seeds(seed)
    model = build_model(model_name, ds.num_classes, ds.input_shape, seed=seeds["weight_seed"]).to(dev)
    gen = seeded_generator(seeds["mask_seed"])
    batches = None
    if get_method(method).needs_data:
        def batches(n: int) -> tuple[torch.Tensor, torch.Tensor]:
            return data.sample_batch(ds, n, gen, dev)
    start = _previous_mask(previous, model_name, method, seed, density) if previous else None
    inputs = PruneInputs(generator=gen, num_classes=ds.num_classes, input_shape=ds.input_shape,
                         batches=batches, options=dict(options or {}), start=start)
    mask = build_mask(method, model, density, inputs)
    mask.meta.update(model=model_name, dataset=Path(dataset_file).stem, seed=int(seed), num_classes=ds.num_classes,
                     input_shape=tuple(ds.input_shape), **seeds, **({"previous": str(previous)} if previous else {}))
    mask.save(out)
    return mask


def _previous_mask(path: str | os.PathLike, model: str, method: str, seed: int, density: float) -> Mask:
    """The sparser mask a nested method grows from: the same model, method and seed at a lower density."""
    mask = Mask.load(path)
    meta = mask.meta
    want = {"model": model, "method": method, "seed": int(seed)}
    wrong = {k: meta.get(k) for k, v in want.items() if meta.get(k) != v}
    if wrong:
        raise ValueError(f"mask file {path} cannot be grown into {method} on {model} for seed {seed}: its "
                         f"{', '.join(f'{k} is {v!r}' for k, v in wrong.items())}")
    if not float(meta.get("density", 1.0)) < float(density):
        raise ValueError(f"mask file {path} has density {meta.get('density')}, not below {density}: "
                         f"{method} grows from a sparser mask")
    return mask


def imp_mask(run_dir: str | os.PathLike, rate: float, out: str | os.PathLike) -> Mask:
    """The next IMP level: prune `rate` of the remaining weights of a trained run, globally by |w|."""
    run = Path(run_dir)
    mask = Mask.load(run / "mask.pt")
    state = load_torch(run / "model.pt", "trained weights")
    missing = [k for k in mask if k not in state]
    if missing:
        raise ValueError(f"{run / 'model.pt'} does not fit {run / 'mask.pt'}: no weights for {missing[:3]}")
    scores = {k: torch.where(m, state[k].abs().double(), -1.0) for k, m in mask.items()}
    kept = mask.kept - int(round(rate * mask.kept))
    new = Mask.top(scores, kept)
    meta = {k: v for k, v in mask.meta.items() if k not in ("topology",)}
    new.meta.update(meta, method="imp", density=new.density, fresh_weights=False,
                    level=int(mask.meta.get("level", 0)) + 1, previous=str(run))
    new.save(out)
    return new


def run_training(run: Run, recipe: Recipe, *, data_file: str | os.PathLike, mask_file: str | os.PathLike,
                 out_dir: str | os.PathLike, topology: str = "static", topology_options: dict[str, Any] | None = None,
                 init_weights: str | os.PathLike | None = None, rewind_step: int | None = None,
                 tracking_uri: str | None = None, device: str = "auto", log: Log = print) -> Result:
    """Train one run and write metrics.json, model.pt, mask.pt and structure.json into `out_dir`.

    `init_weights` replaces the seeded initial weights (IMP rewinding); with `rewind_step` the run also
    writes rewind.pt, its weights after that many optimizer steps, for IMP's levels to restart from.
    """
    job = _prepare(run, recipe, data_file, mask_file, out_dir, topology, topology_options, init_weights,
                   rewind_step, device)
    track = Tracking(tracking_uri, run.study, run.name)
    started = _start_tracking(job, track, log)
    recorder = _recorder(job, track, log)
    result = _train_tracked(job, track, started, recorder, log)
    _finish(job, track, result, recorder)
    return result


@dataclass
class _Job:
    """One training job, set up: what it trains, on what, and where its files go."""

    run: Run
    recipe: Recipe
    out: Path
    data_file: str | os.PathLike
    mask_file: str | os.PathLike
    topology: str
    topology_options: dict[str, Any] | None
    init_weights: str | os.PathLike | None
    rewind_step: int | None
    dev: torch.device
    ds: data.Dataset
    seeds: dict[str, int]
    mask: Mask
    model: torch.nn.Module
    loaders: tuple[Any, Any, Any]  # training, test, and the test batches of epochs before the last (or None)
    params: dict[str, Any]  # its MLflow params
    key: str  # what defines it: a checkpoint with another key is another run's
    init_structure: dict[str, Any]  # the network as training starts (PHEW's measures)
    extra: dict[str, Any] = field(default_factory=dict)  # saved with every checkpoint: a resumed job keeps all of it

    @property
    def checkpoint(self) -> Path:
        return self.out / "checkpoint.pt"


def _prepare(run: Run, recipe: Recipe, data_file: str | os.PathLike, mask_file: str | os.PathLike,
             out_dir: str | os.PathLike, topology: str, topology_options: dict[str, Any] | None,
             init_weights: str | os.PathLike | None, rewind_step: int | None, device: str) -> _Job:
    """The device, the data, the seeded model under its mask, the loaders and the run's params, checked."""
    dev = claim_device(device)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ds = data.load(data_file)
    data.check_subsets(ds, recipe.train_subset, recipe.eval_subset, f"dataset file {data_file}")
    seeds = derive_seeds(run.seed)
    mask = Mask.load(mask_file)
    model, fresh = _initial_model(run, ds, mask, seeds, mask_file, init_weights)
    model.to(dev)
    loaders = _loaders(ds, recipe, seeds["data_seed"], dev)
    total_steps = recipe.epochs * len(loaders[0])
    if rewind_step is not None and not 0 <= rewind_step <= total_steps:
        raise ValueError(f"rewind step {rewind_step} is outside this run's {total_steps} optimizer steps "
                         f"({recipe.epochs} epochs of {len(loaders[0])})")
    params = {**recipe.to_dict(), **seeds, "seed": run.seed, "topology": topology,
              **{f"topology.{k}": v for k, v in (topology_options or {}).items()},
              "density": run.density, "mask_file": str(mask_file), "fresh_weights": fresh,
              "init_weights": str(init_weights or ""), "rewind_step": "" if rewind_step is None else rewind_step,
              "device": dev.type, "torch": torch.__version__}
    key = json.dumps({"spec": run.name, "params": {k: str(v) for k, v in params.items() if k != "device"}},
                     sort_keys=True)
    return _Job(run, recipe, out, data_file, mask_file, topology, topology_options, init_weights, rewind_step, dev,
                ds, seeds, mask, model, loaders, params, key, summary(model, mask, ds.input_shape))


def _start_tracking(job: _Job, track: Tracking, log: Log) -> Future | None:
    """Start the run's MLflow run (a resumed job continues its own: the checkpoint knows its id), tagged with a
    checkpoint found damaged; log its dataset. Returns the start's future (its run id)."""
    resume_id, damaged = _checkpoint_run_id(job.checkpoint, job.key, log)
    started = track("start", {k: v for k, v in job.run.tags().items() if k != "density"}, job.params,
                    resume_run_id=resume_id, **_run_page(job))
    if damaged:  # set aside by read_checkpoint; the run goes on from the previous checkpoint or from scratch
        track("set_tags", {"damaged_checkpoint": ", ".join(str(f) for f in damaged)})
    track("log_dataset", job.data_file, Path(job.data_file).stem, _split_sizes(job.ds))
    return started


def _recorder(job: _Job, track: Tracking, log: Log) -> StructureRecorder | None:
    """A moving structure's per-epoch masks (None for a static one); a damaged epoch mask is set aside, and the
    run goes on from before its epoch."""
    if job.topology == "static":
        return None
    recorder = StructureRecorder(job.out / "epoch_masks", job.extra)
    first, aside = recorder.set_aside_damaged(log)
    if first is not None:
        _drop_checkpoints_after(job.checkpoint, first, log)
    if aside:
        track("set_tags", {"damaged_epoch_mask": ", ".join(str(f) for f in aside)})
    return recorder


def _callbacks(job: _Job, track: Tracking, started: Future | None,
               recorder: StructureRecorder | None) -> dict[str, Callable[..., None] | None]:
    """What the loop calls: each epoch's record (structure, MLflow, the run id into the checkpoint), the
    structure before the first step, and the weights at the rewind step."""
    extra = job.extra

    def on_epoch(row: dict[str, Any], topo: Any) -> None:
        if recorder is not None:
            row["overlap_prev"] = recorder.record(row["epoch"], topo.mask)
        while started is not None and not started.done() and not stop_requested():
            wait([started], timeout=0.2)  # the run's id into this checkpoint, unless a signal asks to stop
        if started is not None and started.done():
            extra["run_id"] = started.result()
        track("log_epoch", dict(row), step=row["epoch"], timestamp_ms=int(time.time() * 1000))

    def on_start(topo: Any) -> None:
        if recorder is not None:  # epoch 0: the structure in force before the first step (DNW: top-k of the init)
            recorder.record(0, topo.mask)

    def on_step(steps: int, net: torch.nn.Module) -> None:
        if steps == job.rewind_step:
            extra["rewind"] = {k: v.detach().to("cpu", copy=True) for k, v in net.state_dict().items()}

    return {"on_epoch": on_epoch, "on_start": on_start, "on_step": on_step if job.rewind_step is not None else None}


def _train_tracked(job: _Job, track: Tracking, started: Future | None, recorder: StructureRecorder | None,
                   log: Log) -> Result:
    """Train; a diverged run becomes a recorded result, a signal or an error closes its MLflow run first."""
    train_loader, test_loader, epoch_test_loader = job.loaders
    try:
        result = train(job.model, job.mask, job.recipe, train_loader, test_loader,
                       generator=seeded_generator(job.seeds["mask_seed"]), topology=job.topology,
                       topology_options=job.topology_options, checkpoint=job.checkpoint, checkpoint_key=job.key,
                       extra_state=job.extra, epoch_test_loader=epoch_test_loader, log=log,
                       **_callbacks(job, track, started, recorder))
        if started is not None:  # a store that could not start the run fails the job, not only its thread
            started.result()
    except NumericalError as e:
        if job.rewind_step is not None and "rewind" not in job.extra:  # IMP's levels would have nothing to restart from
            with contextlib.suppress(Exception):
                track.close("FAILED")
            raise
        return _diverged(job, e, log)
    except Terminated as e:  # SIGTERM or SIGINT: checkpointed at the step it came after
        _killed(track, e, log)
        raise
    except BaseException:
        with contextlib.suppress(Exception):  # the training error is the one to report
            track.close("FAILED")
        raise
    for row in result.history[: result.resumed_from]:
        track("log_epoch", row, step=row["epoch"])  # epochs a killed job had not logged yet
    return result


def _diverged(job: _Job, error: NumericalError, log: Log) -> Result:
    """An unnormalised net may diverge at the recipe's lr: a recorded result (diverged, MLflow FAILED), so that
    the study's other runs, tables and figures go on without it; the model gets its last good weights."""
    log(f"diverged: {error}; the run is recorded as diverged and its MLflow run marked FAILED")
    job.model, _ = _initial_model(job.run, job.ds, job.mask, job.seeds, job.mask_file, job.init_weights)
    return Result(history=_last_good(job.checkpoint, job.key, job.model), mask=job.mask, diverged=str(error))


def _finish(job: _Job, track: Tracking, result: Result, recorder: StructureRecorder | None) -> None:
    """Write the run's files and metrics.json, log its summary and artifacts, close its MLflow run, and drop
    what only a resumed job needed."""
    if job.rewind_step is not None:
        atomic_save(job.extra.pop("rewind"), job.out / "rewind.pt")
    metrics = _write_outputs(job.out, job.model, result, {**job.mask.meta, "topology": job.topology}, recorder,
                             job.init_structure, job.ds.input_shape)
    train_loader = job.loaders[0]
    metrics.update(spec=job.run.tags(), epochs=job.recipe.epochs, seeds=job.seeds, topology=job.topology,
                   topology_options=job.topology_options or {}, init_weights=str(job.init_weights or ""),
                   rewind_step=job.rewind_step, diverged=bool(result.diverged),
                   # the run's regime, which the claims check (sparsenets.claims): its final accuracy is measured on
                   # test_size images; an epoch is steps_per_epoch optimizer steps over train_images images
                   test_size=len(job.ds.y_test), train_images=len(train_loader.y),
                   steps_per_epoch=len(train_loader),
                   device=device_kind(job.dev))  # what its seconds were measured on (plan --calibrate)
    if result.diverged:  # no accuracy to report: tables and claims count it as not measured
        metrics.update(final_test_acc=None, best_test_acc=None, final_train_loss=None, final_test_loss=None,
                       error=result.diverged)
    write_json(job.out / "metrics.json", metrics)
    # a diverged run has no accuracy (None: left out), but its structure and density
    track("log_summary", _final_metrics(metrics, job.init_structure, _read_structure(job.out)))
    track("log_artifacts", [job.out / "metrics.json", job.out / "structure.json", job.out / "mask.pt"])
    track.close("FAILED" if result.diverged else "FINISHED")
    remove_checkpoints(job.checkpoint)
    if recorder is not None:
        recorder.discard()  # only now: until the checkpoint is gone, a resumed job reads every epoch's mask


def _killed(track: Tracking, stopped: Terminated, log: Log) -> None:
    """The run of a job stopped by a signal: KILLED, tagged with the signal (`killed_by`); the store gets
    TRACKING_WAIT_S to take it, so that the job exits within its grace period (signals.GRACE_S)."""
    log(str(stopped))
    t0 = time.monotonic()
    try:
        track("set_tags", {KILLED_BY: stopped.name})
        closed = track.close("KILLED", timeout=TRACKING_WAIT_S)
    except Exception as e:  # noqa: BLE001 - the signal is what stopped the job; the store's error is secondary
        closed, stopped.message = False, f"{stopped.message}; the MLflow run was not closed: {type(e).__name__}: {e}"
    waited = time.monotonic() - t0
    log(f"MLflow run marked KILLED ({KILLED_BY}: {stopped.name}) in {waited:.2f} s" if closed else
        f"MLflow run not marked KILLED: no answer from the store in {waited:.1f} s; a later job marks it "
        "(its owner is dead)")


def _run_page(job: _Job) -> dict[str, Any]:
    """How the run shows in MLflow: its short name, its parent (the method on this dataset and model), a
    description, its start (now: MLflow's worker may get there after the first epochs) and its device."""
    run = job.run
    what = f"`{run.method}`" + (f" ({job.topology} topology)" if job.topology != "static" else "")
    if run.variant == "reinit":
        what = f"the final structure of `{run.method}` retrained from fresh weights (reinit)"
    note = (f"{what} at density {run.density}, seed {run.seed}: {run.model} on {run.dataset}, "
            f"{job.recipe.epochs} epochs (study {run.study}). Files: {job.out}/ "
            "(mask.pt, structure.json and metrics.json are also this run's artifacts).")
    return {"name": run_name(run.method, run.density, run.seed, run.variant), "note": note, "parent": run.parent,
            "start_ms": int(time.time() * 1000), "device": str(job.dev)}


def _split_sizes(ds: data.Dataset) -> dict[str, int]:
    """The file's split sizes: MLflow keeps one dataset per experiment, name and digest, so they describe the
    file; how much of each split a run uses is its recipe's train_subset and eval_subset (params)."""
    return {"train": len(ds.y_train), "test": len(ds.y_test)}


def _read_structure(out: Path) -> dict[str, Any]:
    return json.loads((out / "structure.json").read_text())["summary"]


def _final_metrics(metrics: dict[str, Any], init: dict[str, Any], final: dict[str, Any]) -> dict[str, float]:
    """The numbers the claims rest on, one value per run: accuracy, the actual density, and the structure
    (path-kernel trace, narrowest width ratio, dead units) as training started (init_*) and at the end."""
    out = {k: metrics[k] for k in ("final_test_acc", "best_test_acc", "final_train_loss", "final_test_loss")}
    out["actual_density"] = metrics["density"]
    for prefix, s in (("init_", init), ("", final)):
        out.update({f"{prefix}path_kernel_trace": s["path_kernel_trace"],
                    f"{prefix}min_width_ratio": s["min_width_ratio"], f"{prefix}dead_units": s["dead"]})
    return out


def _initial_model(run: Run, ds: data.Dataset, mask: Mask, seeds: dict[str, int], mask_file: Any,
                   init_weights: str | os.PathLike | None) -> tuple[torch.nn.Module, bool]:
    """The weights a run starts from: seeded (fresh ones for reinit), or loaded from `init_weights`."""
    fresh = run.variant == "reinit" or bool(mask.meta.get("fresh_weights"))
    model = build_model(run.model, ds.num_classes, ds.input_shape,
                        seed=seeds["reinit_seed"] if fresh else seeds["weight_seed"])
    mask.check_model(model, source=f"mask file {mask_file}", target=run.model)
    if init_weights:
        if fresh:
            raise ValueError(f"run {run.name} starts from fresh weights; it cannot also load {init_weights}")
        state = load_torch(init_weights, "initial weights")
        try:
            model.load_state_dict(state)
        except RuntimeError as e:
            raise ValueError(f"initial weights {init_weights} do not fit {run.model}: {e}") from None
    return model, fresh


def _loaders(ds: data.Dataset, recipe: Recipe, data_seed: int, dev: torch.device) -> tuple[Any, Any, Any]:
    """Training batches (a fixed subset if the recipe asks for one), test batches, and the test batches
    of epochs before the last (a fixed subset if the recipe asks for one, else None), on the device."""
    args = dict(batch_size=recipe.batch_size, device=dev, mean=ds.mean, std=ds.std)
    x_train, y_train = _subset(ds.x_train, ds.y_train, recipe.train_subset)
    test = data.DeviceLoader(ds.x_test, ds.y_test, train=False, seed=0, **args)
    epoch_test = None
    if recipe.eval_subset and recipe.eval_subset < len(ds.y_test):
        epoch_test = data.DeviceLoader(*_subset(ds.x_test, ds.y_test, recipe.eval_subset), train=False, seed=0, **args)
    return (data.DeviceLoader(x_train, y_train, train=True, seed=data_seed, augment=recipe.augment, **args),
            test, epoch_test)


def _subset(x: np.ndarray, y: np.ndarray, n: int | None) -> tuple[np.ndarray, np.ndarray]:
    """A fixed subset of `n` images (the same for every run), in the split's order."""
    if not n or n >= len(y):
        return x, y
    keep = np.sort(np.random.default_rng(0).permutation(len(y))[:n])
    return x[keep], y[keep]


def _write_outputs(out: Path, model: torch.nn.Module, result: Result, meta: dict[str, Any],
                   recorder: StructureRecorder | None, init_structure: dict[str, Any],
                   input_shape: tuple[int, int, int]) -> dict[str, Any]:
    """mask.pt (with `meta`), model.pt and structure.json of a finished run; returns the run's metrics."""
    final_mask = result.mask
    final_mask.meta.update(meta, density=final_mask.density)
    final_mask.save(out / "mask.pt")
    atomic_save(model.state_dict(), out / "model.pt")
    structure = {"init": init_structure, "summary": summary(model, final_mask, input_shape),
                 "layers": layer_table(model, final_mask, input_shape)}
    if recorder is not None:
        structure["history"] = recorder.finish(final_mask)
    write_json(out / "structure.json", structure)
    return {"final_test_acc": result.final.get("test_acc"), "best_test_acc": result.best_test_acc,
            "final_train_loss": result.final.get("train_loss"), "final_test_loss": result.final.get("test_loss"),
            "density": final_mask.density, "history": result.history}


def _last_good(path: Path, key: str, model: torch.nn.Module) -> list[dict[str, Any]]:
    """Load a diverged run's last good (finite) weights into `model`, its initial ones if it diverged in
    epoch 1, and return the history of those good epochs."""
    found = read_checkpoint(path, key, lambda _: None)
    if found is None:
        return []
    model.load_state_dict(found[1]["model"])
    return found[1]["history"]


def _drop_checkpoints_after(path: Path, epoch: int, log: Log) -> None:
    """Remove this run's checkpoints taken after `epoch` began (the next epoch's record needs its mask, now
    gone), so that it goes on from an earlier one or from scratch, and ends as an uninterrupted run."""
    for file in (path, previous_checkpoint(path)):
        try:
            done = torch.load(file, map_location="cpu", weights_only=False)["epoch"]
        except Exception:  # noqa: BLE001 - missing or damaged: read_checkpoint sets a damaged one aside
            continue
        if done >= epoch:
            file.unlink()
            log(f"removed checkpoint {file} (after epoch {done}): going on needs the mask of epoch {epoch}")


def _checkpoint_run_id(path: Path, key: str, log: Log) -> tuple[str | None, list[Path]]:
    """The MLflow run of a killed job whose checkpoint is this run's (`key`): its resumption continues it.
    Also the damaged checkpoints this set aside (named in the log; the run is tagged with them)."""
    damaged: list[Path] = []
    found = read_checkpoint(path, key, log, damaged=damaged)
    return (found[1].get("extra", {}).get("run_id") if found else None), damaged
