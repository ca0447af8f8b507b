"""Each job claims a GPU of its own.

Snakemake runs several training jobs at once on one machine (`--resources gpu=N`) but never sets
CUDA_VISIBLE_DEVICES, so a job takes an exclusive `flock` on one lock file per device and keeps it
open while it lives. The OS drops the lock when the process ends, so a killed job never leaves a
stale one behind.
"""
from __future__ import annotations

import fcntl
import os
import sys
import time
from pathlib import Path
from typing import IO

import torch

LOCK_DIR_ENV = "SPARSENETS_GPU_LOCK_DIR"
DEFAULT_LOCK_DIR = "/tmp/sparsenets-gpu-locks"

_held: dict[Path, tuple[IO[str], torch.device]] = {}  # lock dir -> the open lock file and its device


def claim_device(preference: str = "auto", *, count: int | None = None, lock_dir: str | Path | None = None,
                 timeout: float = 3600.0, poll: float = 5.0) -> torch.device:
    """The device a job runs on: "auto" and "cuda" claim a free GPU (or "auto" falls back to the CPU).

    Waits up to `timeout` seconds while every GPU is held by another job. `count` replaces the
    visible CUDA devices by that many fake ones (for tests). A process claims at most one GPU per
    lock dir: asking again returns the same one.
    """
    if preference not in ("auto", "cuda"):
        return torch.device(preference)
    ids = _device_ids(count)
    if not ids:
        if preference == "cuda":
            raise RuntimeError("device 'cuda' was asked for, but no CUDA device is visible")
        return torch.device("cpu")
    folder = Path(lock_dir or os.environ.get(LOCK_DIR_ENV) or DEFAULT_LOCK_DIR)
    if folder in _held:
        return _held[folder][1]
    folder.mkdir(parents=True, exist_ok=True)
    locks = [folder / f"gpu-{key}.lock" for key in ids]
    deadline = time.monotonic() + timeout
    waiting = False
    while True:
        for index, path in enumerate(locks):
            handle = _try_lock(path)
            if handle is not None:
                device = torch.device("cuda", index)
                _held[folder] = (handle, device)
                if waiting:
                    _log(f"claimed {device} after waiting")
                return device
        if time.monotonic() >= deadline:
            raise RuntimeError(
                f"no free GPU after {timeout:.0f}s: all {len(locks)} are held ({_holders(locks)}; lock files in "
                f"{folder}). Run snakemake with --resources gpu={len(locks)} so it never starts more GPU jobs "
                f"than there are GPUs, or set ${LOCK_DIR_ENV} apart for another workflow")
        if not waiting:
            _log(f"all {len(locks)} GPUs are held ({_holders(locks)}); waiting up to {timeout:.0f}s for one")
            waiting = True
        time.sleep(poll)


def _device_ids(count: int | None) -> list[str]:
    """Lock files are named by UUID, not index: two SLURM jobs on one node may each see their own GPU as cuda:0."""
    if count is not None:
        return [str(i) for i in range(count)]
    return [str(torch.cuda.get_device_properties(i).uuid) for i in range(torch.cuda.device_count())]


def _try_lock(path: Path) -> IO[str] | None:
    """The open lock file if we got it (it records our pid for whoever waits), else None."""
    handle = path.open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    handle.truncate(0)
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def _holders(locks: list[Path]) -> str:
    pids = (path.read_text().strip() or "?" for path in locks)
    return ", ".join(f"GPU {i} by pid {pid}" for i, pid in enumerate(pids))


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)
