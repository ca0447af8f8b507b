"""The one training loop: SGD with a step schedule, masked by a Topology, checkpointed every epoch.

Everything a run needs to continue bit-identically (weights, optimizer, topology, history) goes into
one checkpoint per epoch; data order depends only on (data seed, epoch), so a resumed run sees the
same batches an uninterrupted one would.
"""
from __future__ import annotations

import copy
import itertools
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from torch.nn import functional as F

from .masks import Mask, atomic_save
from .optim import SGD
from .signals import StopFlag, Terminated, stop_at_step
from .topology import Schedule, Topology, make_topology


@dataclass(frozen=True)
class Recipe:
    """Hyper-parameters of one training run (both papers' "cifar-160" by default)."""

    epochs: int = 160
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 1e-4
    milestones: tuple[int, ...] = (80, 120)
    gamma: float = 0.1
    augment: bool = True
    train_subset: int | None = None  # train on this many images (a fixed subset), for quick runs
    # evaluate epochs before the last on this many test images (a fixed subset); the last on all of them
    eval_subset: int | None = None
    precision: str = "auto"  # auto: bf16 autocast on CUDA, fp32 elsewhere; or fp32 / bf16 (fast on CPUs with avx512_bf16)
    channels_last: str = "auto"  # auto: on CUDA and CPU (1.3x faster on a CPU, see README); or on / off

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Recipe":
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown recipe key(s): {', '.join(sorted(unknown))}")
        d = dict(d)
        if "milestones" in d:
            d["milestones"] = tuple(d["milestones"])
        return cls(**d)

    def lr_at(self, epoch: int) -> float:
        return self.lr * self.gamma ** sum(epoch >= m for m in self.milestones)

    def uses_bf16(self, device: torch.device) -> bool:
        return uses_bf16(self.precision, device)

    def uses_channels_last(self, device: torch.device) -> bool:
        return self.channels_last == "on" or (self.channels_last == "auto" and prefers_channels_last(device))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


PRECISIONS = ("auto", "fp32", "bf16")


def uses_bf16(precision: str, device: torch.device) -> bool:
    """bf16 autocast where asked, and by default ("auto") on CUDA; evaluation follows the training recipe."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision == "bf16" or (precision == "auto" and device.type == "cuda")


def prefers_channels_last(device: torch.device) -> bool:
    """The "auto" layout, for training and for evaluation alike (CPU pooling is 5x faster in it)."""
    return device.type in ("cuda", "cpu")


class NumericalError(RuntimeError):
    """The loss became NaN or infinite: the run stops, keeping its last good checkpoint."""

    def __init__(self, message: str, epoch: int = 0) -> None:
        super().__init__(message)
        self.epoch = epoch  # the epoch (from 1) whose training loss was not finite


@dataclass
class Result:
    history: list[dict[str, Any]] = field(default_factory=list)
    mask: Mask | None = None
    resumed_from: int = 0  # epochs already done when this process started
    diverged: str = ""  # why the run stopped early (a non-finite loss); "" for a run that finished

    @property
    def final(self) -> dict[str, Any]:
        return self.history[-1] if self.history else {}

    @property
    def best_test_acc(self) -> float:
        return max((h["test_acc"] for h in self.history), default=float("nan"))


EpochCallback = Callable[[dict[str, Any], Topology], None]
StartCallback = Callable[[Topology], None]  # the structure in force before the first step
StepCallback = Callable[[int, nn.Module], None]  # (optimizer steps taken so far, model)


def train(
    model: nn.Module,
    mask: Mask,
    recipe: Recipe,
    train_loader: Any,
    test_loader: Any,
    *,
    generator: torch.Generator,
    topology: str = "static",
    topology_options: dict[str, Any] | None = None,
    checkpoint: str | Path | None = None,
    checkpoint_key: str = "",
    extra_state: dict[str, Any] | None = None,
    on_epoch: EpochCallback | None = None,
    on_start: StartCallback | None = None,
    on_step: StepCallback | None = None,
    epoch_test_loader: Any = None,
    log: Callable[[str], None] = print,
) -> Result:
    """Train `model` under `mask` following `recipe`; resume from `checkpoint` if it is this run's.

    `checkpoint_key` names what defines the run: a checkpoint with another key is not resumed.
    `extra_state` is stored in every checkpoint and handed back (e.g. the tracking run id).
    `on_start(topology)` and `on_step(0, model)` see the run before its first optimizer step (not on resume);
    `on_step(n, model)` then sees it after each (n steps taken). `epoch_test_loader`, if given, evaluates
    every epoch but the last, which always sees the whole `test_loader`.
    """
    use_bf16 = recipe.uses_bf16(next(model.parameters()).device)
    optimizer, topo = _parts(model, mask, recipe, len(train_loader), generator, topology, topology_options)
    ckpt = _Checkpoint(checkpoint, checkpoint_key, model, optimizer, topo, generator)

    result, done, step = _begin(ckpt, len(train_loader), extra_state, on_start, on_step, log)
    with stop_at_step(log) as stop:
        for epoch in range(result.resumed_from, recipe.epochs):
            _stop_between_epochs(stop, epoch, checkpoint)
            t0, lr = time.perf_counter(), recipe.lr_at(epoch)
            for group in optimizer.param_groups:
                group["lr"] = lr
            done, step = _train_epoch(model, optimizer, topo, train_loader, epoch, step, use_bf16, on_step, done, stop)
            if done.batches < len(train_loader):  # stopped by a signal: checkpoint this step, then exit
                ckpt.stop(stop, epoch, step, done, len(train_loader), result.history, extra_state)
            train_loss, done = float(done.loss_sum) / max(1, len(train_loader)), _Progress()
            _check_finite(train_loss, epoch)
            topo.end_epoch(epoch)
            last = epoch + 1 == recipe.epochs or epoch_test_loader is None
            row = _evaluated(model, topo, test_loader if last else epoch_test_loader, use_bf16,
                             {"epoch": epoch + 1, "train_loss": train_loss})
            row.update(lr=lr, seconds=time.perf_counter() - t0)
            result.history.append(row)
            if on_epoch is not None:  # before the checkpoint, so that what it records is saved with it
                on_epoch(row, topo)
            ckpt.save(epoch + 1, result.history, extra_state)
            log(f"epoch {epoch + 1:>3}/{recipe.epochs}  lr {lr:.4g}  train_loss {train_loss:.4f}  "
                f"test_loss {row['test_loss']:.4f}  test_acc {row['test_acc']:.4f}  density {row['density']:.4f}  "
                f"{row['seconds']:.1f}s")
    result.mask = topo.mask
    _keep_effective_weights(model, topo)
    return result


def _begin(ckpt: "_Checkpoint", steps_per_epoch: int, extra_state: dict[str, Any] | None,
           on_start: StartCallback | None, on_step: StepCallback | None,
           log: Callable[[str], None]) -> tuple[Result, "_Progress", int]:
    """Resume from the run's checkpoint, if any; a run starting from step 0 shows its callbacks the structure
    and weights before the first step. Returns the result so far, the epoch in progress and the step count."""
    result, done = ckpt.resume(extra_state, log)
    if os.environ.get("SPARSENETS_BENCH_FIRST_STEP"):  # benchmarks/overhead.py times a job's start-up
        log(f"first step at {time.time():.3f}")
    step = result.resumed_from * steps_per_epoch + done.batches
    if step == 0 and on_start is not None:
        on_start(ckpt.topo)
    if step == 0 and on_step is not None:
        on_step(0, ckpt.model)
    return result, done, step


def _keep_effective_weights(model: nn.Module, topo: Topology) -> None:
    """Leave the weights the structure in force makes effective (masked; DNW's top-k) in the model."""
    with topo.evaluating():
        effective = {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.load_state_dict(effective)


def _parts(model: nn.Module, mask: Mask, recipe: Recipe, steps_per_epoch: int, generator: torch.Generator,
           topology: str, options: dict[str, Any] | None) -> tuple[SGD, Topology]:
    """The optimizer and the topology of a run, the model in the recipe's memory layout."""
    if recipe.uses_channels_last(next(model.parameters()).device):
        model.to(memory_format=torch.channels_last)
    optimizer = SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum, nesterov=recipe.nesterov,
                    weight_decay=recipe.weight_decay)
    schedule = Schedule(steps_per_epoch, recipe.epochs, generator)
    return optimizer, make_topology(topology, model, mask, optimizer, schedule, **(options or {}))


@dataclass
class _Progress:
    """How far the epoch in progress got: batches done and the sum of their losses (on the training device).
    A job stopped by a signal checkpoints it, and its rerun goes on from the next batch."""

    batches: int = 0
    loss_sum: torch.Tensor | None = None


def _train_epoch(model: nn.Module, optimizer: SGD, topo: Topology, loader: Any, epoch: int, step: int,
                 use_bf16: bool, on_step: StepCallback | None, done: _Progress | None = None,
                 stop: StopFlag | None = None) -> tuple[_Progress, int]:
    """One pass over `loader`'s batches of `epoch` from batch `done.batches` on, ending early after the step in
    which `stop` is set; how far it got (the loss summed on the device: one host sync) and the step count."""
    device = next(model.parameters()).device
    done = done or _Progress()
    model.train()
    loss_sum = torch.zeros((), device=device) if done.loss_sum is None else done.loss_sum.to(device)
    batches = done.batches
    # the batches a stopped job had done are drawn again and skipped: the epoch's order and crops stay the same
    for x, y in itertools.islice(loader.epoch(epoch), batches, None):
        topo.before_forward(step)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        topo.before_step(step)
        optimizer.step()
        topo.after_step(step)
        loss_sum += loss.detach()
        step += 1
        batches += 1
        if on_step is not None:
            on_step(step, model)
        if stop and batches < len(loader):
            break
    return _Progress(batches, loss_sum), step


def _evaluated(model: nn.Module, topo: Topology, loader: Any, use_bf16: bool, row: dict[str, Any]) -> dict[str, Any]:
    """`row` with the test loss and accuracy on `loader` and the density in force."""
    with topo.evaluating():
        test_loss, test_acc = evaluate(model, loader, use_bf16)
    return {**row, "test_loss": test_loss, "test_acc": test_acc, "test_images": len(loader.y),
            "density": topo.mask.density}


def _stop_between_epochs(stop: StopFlag, epoch: int, checkpoint: str | Path | None) -> None:
    """A signal that came after the last step of an epoch: its checkpoint is already written."""
    if stop:
        raise Terminated(stop.signum, f"stopped by {stop.name} {stop.elapsed():.2f} s after it, after epoch {epoch}, "
                                      f"checkpointed to {checkpoint}: a rerun resumes there")


def _check_finite(train_loss: float, epoch: int) -> None:
    """Stop before a diverged epoch overwrites the last good checkpoint."""
    if not math.isfinite(train_loss):
        raise NumericalError(f"training loss is {train_loss} in epoch {epoch + 1}; "
                             f"the last good checkpoint (epoch {epoch}) is kept", epoch=epoch + 1)


@dataclass
class _Checkpoint:
    """Everything a run needs to continue bit-identically, in one file written after each epoch; the one
    before it is kept too (`previous_checkpoint`), so a damaged checkpoint costs an epoch, not the run.

    `key` names what defines the run: a checkpoint with another key is another run's, and is not resumed.
    """

    path: str | Path | None
    key: str
    model: nn.Module
    optimizer: SGD
    topo: Topology
    generator: torch.Generator

    def resume(self, extra_state: dict[str, Any] | None, log: Callable[[str], None]) -> tuple[Result, _Progress]:
        """Load this run's newest good checkpoint, if any, into the parts and `extra_state`; the history so far
        and how far the epoch in progress got (a job stopped by a signal checkpoints in mid-epoch).
        One that reads but does not fit the parts is set aside like a damaged file, and the next one tried."""
        initial = None
        device = next(self.model.parameters()).device
        while self.path is not None and (found := read_checkpoint(self.path, self.key, log, device)) is not None:
            file, state = found
            initial = initial or self._parts()
            try:
                self._load(state)
            except Exception as e:  # noqa: BLE001 - whatever does not fit: this file is not resumable
                self._load(initial)
                set_aside(file, f"it does not fit this run ({type(e).__name__}: {e})", log)
                continue
            if extra_state is not None:
                extra_state.update(state.get("extra", {}))
            done = _Progress(state.get("batch", 0), state.get("loss_sum"))
            log(f"resuming from {file} after epoch {state['epoch']}"
                + (f" and {done.batches} batches of the next" if done.batches else ""))
            return Result(history=state["history"], resumed_from=state["epoch"]), done
        return Result(), _Progress()

    def _parts(self) -> dict[str, Any]:
        """A copy of the parts' state as a checkpoint holds it (to undo a load that failed half-way)."""
        return copy.deepcopy({"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                              "topology": self.topo.state_dict(), "generator": self.generator.get_state()})

    def _load(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.topo.load_state_dict(state["topology"])
        self.generator.set_state(state["generator"])

    def stop(self, stop: StopFlag, epoch: int, step: int, done: _Progress, batches: int,
             history: list[dict[str, Any]], extra_state: dict[str, Any] | None) -> None:
        """Checkpoint a run stopped by a signal after `done.batches` of epoch `epoch` (from 0), then exit."""
        self.save(epoch, history, extra_state, done)
        raise Terminated(stop.signum, f"stopped by {stop.name} {stop.elapsed():.2f} s after it, at step {step} "
                                      f"(epoch {epoch + 1}, batch {done.batches}/{batches}), checkpointed to "
                                      f"{self.path}: a rerun resumes there")

    def save(self, epoch: int, history: list[dict[str, Any]], extra_state: dict[str, Any] | None,
             done: _Progress | None = None) -> None:
        """`epoch` epochs done, and `done` of the next (a job stopped by a signal)."""
        if self.path is not None:
            partial = {"batch": done.batches, "loss_sum": done.loss_sum.cpu()} if done and done.batches else {}
            if Path(self.path).exists():  # the last checkpoint becomes the previous one
                os.replace(self.path, previous_checkpoint(self.path))
            atomic_save({"key": self.key, "epoch": epoch, "model": self.model.state_dict(),
                         "optimizer": self.optimizer.state_dict(), "topology": self.topo.state_dict(),
                         "generator": self.generator.get_state(), "history": history,
                         "extra": extra_state or {}, **partial}, self.path)


CHECKPOINT_KEYS = ("key", "epoch", "model", "optimizer", "topology", "generator", "history")


def previous_checkpoint(path: str | Path) -> Path:
    """Where the checkpoint before `path` is kept: checkpoint.pt -> checkpoint.prev.pt."""
    path = Path(path)
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def damaged_checkpoint(path: str | Path) -> Path:
    """Where a damaged checkpoint is moved aside to: checkpoint.pt -> checkpoint.pt.damaged."""
    return Path(f"{path}.damaged")


def read_checkpoint(path: str | Path, key: str, log: Callable[[str], None], map_location: torch.device | str = "cpu",
                    damaged: list[Path] | None = None) -> tuple[Path, dict[str, Any]] | None:
    """(file, state) of the newest readable checkpoint of run `key` (`path`, else the previous one), or None.

    A file that does not load is moved aside (`damaged_checkpoint`) and named in the log, so a rerun goes on
    from the previous checkpoint or from scratch with no manual step; a checkpoint of another run is ignored.
    Each file moved aside is appended to `damaged`.
    """
    damaged = [] if damaged is None else damaged
    for file in (Path(path), previous_checkpoint(path)):
        if not file.exists():
            continue
        try:
            state = torch.load(file, map_location=map_location, weights_only=False)
            lacking = [k for k in CHECKPOINT_KEYS if k not in state]
        except Exception as e:  # noqa: BLE001 - truncated, zeroed or foreign: all are damaged
            damaged.append(set_aside(file, f"{type(e).__name__}: {str(e).strip()[:200]}", log))
            continue
        if lacking:
            damaged.append(set_aside(file, f"it lacks {', '.join(lacking)}", log))
            continue
        if state["key"] != key:
            log(f"ignoring {file}: it belongs to another run")
            return None
        return file, state
    return None


def set_aside(file: Path, reason: str, log: Callable[[str], None]) -> Path:
    """Move a damaged checkpoint out of the way (kept for a post-mortem), say so, and return where it went."""
    aside = damaged_checkpoint(file)
    os.replace(file, aside)
    log(f"damaged checkpoint {file} ({reason}): moved it aside to {aside}; going on from the previous "
        "checkpoint, or from scratch if there is none")
    return aside


def remove_checkpoints(path: str | Path) -> None:
    """A finished run needs neither its checkpoint nor the one before (damaged ones stay, for a post-mortem)."""
    for file in (Path(path), previous_checkpoint(path)):
        file.unlink(missing_ok=True)


@torch.no_grad()
def evaluate(model: nn.Module, loader: Any, bf16: bool = False) -> tuple[float, float]:
    """Mean cross-entropy and accuracy over a loader, with one host sync at the end."""
    model.eval()
    device = next(model.parameters()).device
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    correct = torch.zeros((), device=device, dtype=torch.int64)
    n = 0
    for x, y in loader.epoch(0):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            out = model(x)
        loss_sum += F.cross_entropy(out.float(), y, reduction="sum")
        correct += (out.argmax(1) == y).sum()
        n += len(y)
    return float(loss_sum) / max(1, n), int(correct) / max(1, n)


def seeded_generator(seed: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(int(seed))
    return g
