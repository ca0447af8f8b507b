"""How many jobs a preset runs, and roughly how many GPU- and CPU-hours its training takes.

Job counts are the grid's (`sparsenets.study.expand`, the jobs the workflow's rules look up; a test checks
them against Snakemake's dry run). Hours are, summed over training jobs, epochs x seconds per epoch of the
job's network. Seconds per epoch: on the CPU measured here and now, on a GPU assumed (`GPU_IMAGES_PER_S`),
unless `calibrate` found finished runs of that study and network in a results folder: then the seconds
those runs measured (their `metrics.json` histories, per device they ran on) replace both, and the jobs
whose outputs are there already are counted as done. Mask and sensitivity jobs are left out of the hours:
each takes minutes where a training run takes hours.
"""
from __future__ import annotations

import json
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
import yaml
from torch.nn import functional as F

from . import catalogue
from . import study as grid
from .models import build_model
from .optim import SGD

# Training images per second on one GPU: each model's `gpu_images_per_s` in sparsenets.catalogue, ASSUMED for an
# A100 (bf16 autocast and channels_last, as recipes use on CUDA; batch 128, 32x32 RGB), not measured: scaled from
# public CIFAR timings of these networks (about 6 s per ResNet-18 epoch); small nets are bound by kernel launches,
# not FLOPs. Smaller images than 32x32 make these figures an upper bound. `plan --calibrate results/` replaces
# them by measurements.
GPU_IMAGES_PER_S = {m.name: m.gpu_images_per_s for m in catalogue.MODELS.values()}
ASSUMED_GPU = "A100"
EVAL_SPEEDUP = 3  # a test image costs a forward pass, about a third of a training step (3-4x on CPU here)

KINDS = {"mask": "masks", "imp_mask": "IMP masks", "mask_layer_matched": "matched masks", "train": "training",
         "train_dense": "dense", "train_reinit": "reinit", "train_prune": "mag prune", "sensitivity": "sensitivity"}
TRAINING = grid.TRAINING
Measured = dict[tuple[str, str, str], dict[str, tuple[float, int]]]  # (study, dataset, model) -> device -> (s, runs)


@dataclass(frozen=True)
class EpochCost:
    """Seconds per epoch (a training pass and a test pass) of one network on one dataset, and where each
    figure comes from ("measured now", "assumed A100", "measured on NVIDIA H100 in 36 runs")."""

    dataset: str
    model: str
    cpu: float
    gpu: float
    cpu_source: str = "measured now"
    gpu_source: str = f"assumed {ASSUMED_GPU}"


@dataclass(frozen=True)
class StudyPlan:
    """One study of a preset: its jobs per kind (= Snakemake rule) and those not done yet, its training jobs
    as (dataset, model, epochs, done), and what an epoch costs on each of its networks."""

    study: str
    jobs: dict[str, int]  # kind of job (the rule that runs it) -> jobs
    epochs: int
    costs: list[EpochCost]  # one per (dataset, model) of the study
    training: list[tuple[str, str, int, bool]] = field(default_factory=list)
    left: dict[str, int] | None = None  # jobs per kind whose outputs are missing; None: not looked
    gpu_slots: int = 1  # slots per GPU (runs_per_gpu; sparsenets.study.gpu_share)

    def hours(self, device: str, remaining: bool = False) -> float:
        """Epochs x seconds per epoch, summed over the training jobs (those not done, if `remaining`)."""
        cost = {(c.dataset, c.model): getattr(c, device) for c in self.costs}
        return sum(epochs * cost[d, m] for d, m, epochs, done in self.training if not (remaining and done)) / 3600


def measure_cpu(model: str, dataset: str, batch: int = 128, steps: int = 2) -> tuple[float, float]:
    """Training and test images per second on the CPU, at the current torch thread count."""
    _, _, shape, classes = dataset_facts(dataset)
    gen = torch.Generator().manual_seed(0)
    net = build_model(model, classes, shape, seed=0)
    x, y = torch.randn(batch, *shape, generator=gen), torch.randint(classes, (batch,), generator=gen)
    optimizer = SGD(net.parameters(), lr=0.01, momentum=0.9)

    def train_step() -> None:
        optimizer.zero_grad()
        F.cross_entropy(net(x), y).backward()
        optimizer.step()

    @torch.no_grad()
    def test_step() -> None:
        net(x)

    train = _throughput(train_step, batch, steps)
    net.eval()
    return train, _throughput(test_step, batch, steps)


def _throughput(step: Callable[[], None], batch: int, steps: int) -> float:
    step()  # warm-up: allocations and lazy initialisation
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return batch * steps / (time.perf_counter() - t0)


def dataset_facts(name: str) -> tuple[int, int, tuple[int, int, int], int]:
    """(train images, test images, input shape, classes), known without the data (its catalogue entry): a plan
    comes before any download."""
    if name not in catalogue.DATASETS:
        raise ValueError(f"no size known for dataset {name!r} (sparsenets.catalogue); known: "
                         f"{', '.join(catalogue.DATASETS)}")
    d = catalogue.DATASETS[name]
    return d.train, d.test, d.shape, d.classes


def epoch_cost(dataset: str, model: str, recipe: dict, measured: Mapping[str, tuple[float, int]] | None = None
               ) -> EpochCost:
    """One epoch as a recipe runs it (its training subset and batch size) on the CPU and on a GPU: measured in
    finished runs where `measured` has that device (the GPU most runs used), else measured now / assumed."""
    measured = measured or {}
    gpus = sorted(((runs, kind) for kind, (_, runs) in measured.items() if kind not in ("cpu", "unknown")),
                  reverse=True)
    if "cpu" in measured:
        seconds, runs = measured["cpu"]
        cpu, cpu_source = seconds, f"measured in {runs} run(s)"
    else:
        n_train, n_test = _images(dataset, recipe)
        cpu_train, cpu_test = measure_cpu(model, dataset, batch=recipe.get("batch_size", 128))
        cpu, cpu_source = n_train / cpu_train + n_test / cpu_test, "measured now"
    if gpus:
        kind = gpus[0][1]
        seconds, runs = measured[kind]
        return EpochCost(dataset, model, cpu, seconds, cpu_source, f"measured on {kind} in {runs} run(s)")
    images = GPU_IMAGES_PER_S.get(model)
    if images is None:
        raise ValueError(f"no assumed GPU throughput for model {model!r}: it has no entry in sparsenets.catalogue")
    n_train, n_test = _images(dataset, recipe)
    return EpochCost(dataset, model, cpu, n_train / images + n_test / (EVAL_SPEEDUP * images), cpu_source)


def _images(dataset: str, recipe: dict) -> tuple[int, int]:
    n_train, n_test, _, _ = dataset_facts(dataset)
    return min(n_train, recipe.get("train_subset") or n_train), n_test


def calibrate(results_dir: str | Path) -> Measured:
    """Mean seconds per epoch of the finished runs under `results_dir` (each `metrics.json`'s history), per
    study, dataset, model and device they ran on ("cpu" or the GPU's name; "unknown" before it was recorded)."""
    root = Path(results_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"--calibrate {root}: no such folder; give the results folder of a run "
                                "(results_dir in config.yaml)")
    per_run: dict[tuple[str, str, str], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    runs = grid.Paths(".", "")("run", study="*", run="**").removeprefix("./")  # every run folder of every study
    for path in sorted(root.glob(f"{runs}/{grid.RUN_FILES['metrics']}")):
        metrics = _read_metrics(path)
        history = [h["seconds"] for h in metrics.get("history", []) if "seconds" in h]
        spec, run = metrics.get("spec", {}), grid.Run.from_path(path)
        if not history or not {"dataset", "model"} <= set(spec) or run is None:
            continue  # a diverged or foreign file: nothing to learn from
        key = (run.study, spec["dataset"], spec["model"])
        per_run[key][metrics.get("device", "unknown")].append(sum(history) / len(history))
    return {key: {kind: (sum(s) / len(s), len(s)) for kind, s in kinds.items()} for key, kinds in per_run.items()}


def _read_metrics(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: not a run's metrics.json ({e}); delete it to rerun its job") from None


def plan(preset: str | None = None, configfile: str | Path = "config.yaml",
         calibrate_from: str | Path | None = None) -> tuple[str, list[StudyPlan]]:
    """The preset (the config's own by default) and, per study, its jobs and per-epoch costs; with
    `calibrate_from` (a results folder), the costs its finished runs measured and the jobs still to do."""
    config = yaml.safe_load(Path(configfile).read_text())
    if calibrate_from is not None:
        config["results_dir"] = str(calibrate_from)
    preset, _ = grid.preset_of(config, preset)
    jobs = grid.expand(config, preset)
    measured = calibrate(calibrate_from) if calibrate_from is not None else {}
    plans = []
    for study in grid.studies(config, preset):
        mine = [j for j in jobs if j.study == study.name]
        costs = [epoch_cost(d, m, study.recipe, measured.get((study.name, d, m)))
                 for d in study.spec["datasets"] for m in study.spec["models"]]
        done = {j.key for j in mine if all(Path(f).exists() for f in j.outputs.values())}
        training = [(j.run.dataset, j.run.model, json.loads(j.params["recipe"])["epochs"], j.key in done)
                    for j in mine if j.kind in TRAINING]
        left = dict(Counter(j.kind for j in mine if j.key not in done)) if calibrate_from is not None else None
        plans.append(StudyPlan(study.name, dict(Counter(j.kind for j in mine)), study.recipe["epochs"], costs,
                               training, left, grid.gpu_share(config, "")[1]))
    return preset, plans


def recorded_jobs(results_dir: str | Path) -> list[tuple[str, float, float]]:
    """(rule, start, end) of every job Snakemake finished for a results folder, from its own records
    (`.snakemake/metadata` in the folder it ran in, the results folder's parent: each output's start and end
    time; a job with several outputs counted once)."""
    meta = Path(results_dir).resolve().parent / ".snakemake" / "metadata"
    jobs: dict[tuple, tuple[str, float, float]] = {}
    for f in meta.rglob("*") if meta.is_dir() else ():
        try:
            rec = json.loads(f.read_text()) if f.is_file() else {}
        except (OSError, ValueError):
            continue  # a record Snakemake was writing, or foreign: it prices nothing
        if rec.get("rule") and rec.get("starttime") and rec.get("endtime") and not rec.get("incomplete"):
            # one record per output, each with its own start: one job is its rule and hash (its start without a hash)
            key = (rec["rule"], rec.get("job_hash") or float(rec["starttime"]))
            start, end = float(rec["starttime"]), float(rec["endtime"])
            if key in jobs:
                start, end = min(start, jobs[key][1]), max(end, jobs[key][2])
            jobs[key] = (rec["rule"], start, end)
    return sorted(jobs.values(), key=lambda j: j[1])


def format_measured(results_dir: str | Path, plans: list[StudyPlan], cores: int, threads: int) -> str:
    """The preset's wall time priced by the seconds each finished job took (per rule, Snakemake's records),
    beside the run's own span (first start to last end): how close `plan` comes on this machine."""
    jobs = recorded_jobs(results_dir)
    if not jobs:
        return (f"no Snakemake records beside {results_dir} (.snakemake/metadata in its parent folder): price a "
                "preset from a finished `snakemake` run's results folder")
    per_rule: dict[str, list[float]] = defaultdict(list)
    for rule, start, end in jobs:
        per_rule[rule].append(end - start)
    price = {rule: sum(s) / len(s) for rule, s in per_rule.items()}
    counts = Counter()
    for p in plans:
        counts.update(p.jobs)
    unpriced = sorted(set(counts) - set(price))
    core_s = sum(n * price[rule] for rule, n in counts.items() if rule in price)
    slots = max(1, cores // max(1, threads))
    span = max(e for _, _, e in jobs) - min(s for _, s, _ in jobs)
    estimate, ran = core_s / slots, sum(e - s for _, s, e in jobs) / slots
    lines = ["", f"measured by Snakemake: {len(jobs)} finished jobs, {span / 60:.1f} min from the first start to the "
                 f"last end; mean seconds per job: " + ", ".join(f"{r} {price[r]:.3g} ({len(per_rule[r])})"
                                                             for r in sorted(price)),
             f"priced so, at {slots} job(s) at once (--cores {cores}, --threads {threads}): the jobs that ran "
             f"{ran / 60:.1f} min (measured {span / 60:.1f} min, {100 * (ran - span) / max(span, 1e-9):+.0f} %); "
             f"the whole preset {estimate / 60:.1f} min ({core_s / 3600:.2g} job-hours)"]
    if unpriced:
        lines.append(f"not priced (no finished job of these rules): {', '.join(unpriced)}")
    return "\n".join(lines)


def format_plan(preset: str, plans: list[StudyPlan]) -> str:
    """A table of jobs and hours per study (and of what is left, when calibrated), then the per-epoch costs."""
    header = f"{'study':<20}" + "".join(f"{k:>14}" for k in KINDS.values()) + f"{'GPU-hours':>13}{'CPU-hours':>13}"

    def rows(counts: Callable[[StudyPlan], dict[str, int]], remaining: bool) -> list[str]:
        return [f"{p.study:<20}" + "".join(f"{counts(p).get(rule, 0):>14}" for rule in KINDS)
                + f"{_hours(p.hours('gpu', remaining)):>13}{_hours(p.hours('cpu', remaining)):>13}" for p in plans]

    costs = [f"  {c.dataset}/{c.model}: {c.cpu:.3g} s on the CPU ({c.cpu_source}), {c.gpu:.3g} s on a GPU "
             f"({c.gpu_source})" for p in plans for c in p.costs]
    left = []
    if all(p.left is not None for p in plans):
        total = sum(sum(p.left.values()) for p in plans)
        left = ["", f"left to run: {total} of {sum(sum(p.jobs.values()) for p in plans)} jobs (outputs missing), "
                "and the hours of their training", header, *rows(lambda p: p.left or {}, True)]
    return "\n".join([
        f"preset {preset}: jobs per kind, and hours of training (epochs x runs x seconds per epoch)",
        header, *rows(lambda p: p.jobs, False), *left, "",
        "seconds per epoch (a training pass and a test pass):", *costs, "",
        f"CPU-hours are core-hours at {torch.get_num_threads()} thread(s) per job; GPU-hours assume one run per GPU "
        f"(an {ASSUMED_GPU} unless measured: sparsenets.plan.GPU_IMAGES_PER_S; `--calibrate results/` measures); "
        "mask and sensitivity jobs are left out (minutes each).",
        f"runs_per_gpu gives each GPU {plans[0].gpu_slots if plans else 1} slot(s): run N GPUs with `snakemake "
        f"--resources gpu_slots={plans[0].gpu_slots if plans else 1}*N` (README, Running on a GPU workstation).",
    ])


def _hours(h: float) -> str:
    return f"{h:,.0f}" if h >= 100 else f"{h:.2g}"
