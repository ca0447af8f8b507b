"""What durable writes cost: a quick-preset ResNet-20 checkpoint saved with and without its fsyncs.

Each epoch writes one checkpoint (model, optimizer momentum, generator, history) through
`io.atomic_path`, which fsyncs the file and its folder. The fsyncs' share of a quick-preset epoch is
the extra seconds over the epoch's seconds (training images over measured images/s).
"""
from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any
from unittest import mock

import torch

from sparsenets import io
from sparsenets.masks import atomic_save
from sparsenets.models import build_model
from sparsenets.optim import SGD


def _state(device: torch.device) -> dict[str, Any]:
    """A checkpoint as a quick ResNet-20 run writes it: weights, a momentum buffer per weight, history."""
    model = build_model("resnet20", 10, (3, 32, 32), seed=0).to(device)
    opt = SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4)
    model(torch.randn(8, 3, 32, 32, device=device)).sum().backward()
    opt.step()
    return {"key": "bench", "epoch": 1, "model": model.state_dict(), "optimizer": opt.state_dict(),
            "generator": torch.Generator().get_state(), "history": [{"epoch": 1, "test_acc": 0.1}]}


def _seconds(state: dict[str, Any], path: Path, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        atomic_save(state, path)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def fsync_cost(device: torch.device, epoch_s: float, rounds: int = 7) -> dict[str, float]:
    """Seconds per checkpoint with and without fsync, alternating, and the fsyncs' share of an epoch."""
    state = _state(device)
    with_sync, without = [], []
    with tempfile.TemporaryDirectory(dir=Path.cwd()) as tmp:  # the file system results/ is on, not tmpfs
        path = Path(tmp) / "checkpoint.pt"
        atomic_save(state, path)  # warm-up
        for _ in range(rounds):
            with_sync.append(_seconds(state, path, 1))
            with mock.patch.object(io, "_fsync", lambda p: None):
                without.append(_seconds(state, path, 1))
        size = path.stat().st_size
    extra = max(0.0, statistics.median(with_sync) - statistics.median(without))
    return {"checkpoint_bytes": size, "checkpoint_s": statistics.median(with_sync),
            "checkpoint_no_fsync_s": statistics.median(without), "fsync_s": extra,
            "epoch_s": epoch_s, "fsync_share_of_epoch": extra / epoch_s}
