"""The one training loop: SGD with a step schedule, masked by a Topology, checkpointed every epoch.

Everything a run needs to continue bit-identically (weights, optimizer, topology, history) goes into
one checkpoint per epoch; data order depends only on (data seed, epoch), so a resumed run sees the
same batches an uninterrupted one would.
"""
from __future__ import annotations

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
from .topology import Schedule, Topology, make_topology


@dataclass(frozen=True)
class Recipe:
    """Hyper-parameters of one training run (PAPERS.md "cifar-160" by default)."""

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


@dataclass
class Result:
    history: list[dict[str, Any]] = field(default_factory=list)
    mask: Mask | None = None
    resumed_from: int = 0  # epochs already done when this process started

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
    device = next(model.parameters()).device
    use_bf16 = recipe.uses_bf16(device)
    if recipe.uses_channels_last(device):
        model.to(memory_format=torch.channels_last)
    optimizer = SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum, nesterov=recipe.nesterov,
                    weight_decay=recipe.weight_decay)
    schedule = Schedule(len(train_loader), recipe.epochs, generator)
    topo = make_topology(topology, model, mask, optimizer, schedule, **(topology_options or {}))

    result = Result()
    start = 0
    if checkpoint is not None and Path(checkpoint).exists():
        state = torch.load(checkpoint, map_location=device, weights_only=False)
        if state.get("key") == checkpoint_key:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            topo.load_state_dict(state["topology"])
            generator.set_state(state["generator"])
            result.history = state["history"]
            if extra_state is not None:
                extra_state.update(state.get("extra", {}))
            start = result.resumed_from = state["epoch"]
            log(f"resuming from {checkpoint} after epoch {start}")
        else:
            log(f"ignoring {checkpoint}: it belongs to another run")

    if os.environ.get("SPARSENETS_BENCH_FIRST_STEP"):  # benchmarks/overhead.py times a job's start-up
        log(f"first step at {time.time():.3f}")
    step = start * len(train_loader)
    if start == 0:
        if on_start is not None:
            on_start(topo)
        if on_step is not None:
            on_step(0, model)
    for epoch in range(start, recipe.epochs):
        t0 = time.perf_counter()
        lr = recipe.lr_at(epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        model.train()
        loss_sum = torch.zeros((), device=device)
        for x, y in train_loader.epoch(epoch):
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
            if on_step is not None:
                on_step(step, model)
        train_loss = float(loss_sum) / max(1, len(train_loader))
        if not math.isfinite(train_loss):
            raise NumericalError(f"training loss is {train_loss} in epoch {epoch + 1}; "
                                 f"the last good checkpoint (epoch {epoch}) is kept")
        topo.end_epoch(epoch)
        last = epoch + 1 == recipe.epochs or epoch_test_loader is None
        with topo.evaluating():
            test_loss, test_acc = evaluate(model, test_loader if last else epoch_test_loader, use_bf16)
        row = {
            "epoch": epoch + 1, "train_loss": train_loss, "test_loss": test_loss, "test_acc": test_acc,
            "test_images": len((test_loader if last else epoch_test_loader).y),
            "density": topo.mask.density, "lr": lr, "seconds": time.perf_counter() - t0,
        }
        result.history.append(row)
        if on_epoch is not None:  # before the checkpoint, so that what it records is saved with it
            on_epoch(row, topo)
        if checkpoint is not None:
            atomic_save({"key": checkpoint_key, "epoch": epoch + 1, "model": model.state_dict(),
                         "optimizer": optimizer.state_dict(), "topology": topo.state_dict(),
                         "generator": generator.get_state(), "history": result.history,
                         "extra": extra_state or {}}, checkpoint)
        log(f"epoch {epoch + 1:>3}/{recipe.epochs}  lr {lr:.4g}  train_loss {train_loss:.4f}  "
            f"test_loss {test_loss:.4f}  test_acc {test_acc:.4f}  density {row['density']:.4f}  "
            f"{row['seconds']:.1f}s")
    result.mask = topo.mask
    with topo.evaluating():  # leave the effective (masked) weights in the model
        effective = {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.load_state_dict(effective)
    return result


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
