"""Each job claims a share of a GPU of its own: one slot of `slots` per device, or several.

Snakemake runs several GPU jobs at once on one machine (`--resources gpu=N`, or `gpu_slots=N*S` to pack
several runs per GPU) but never sets CUDA_VISIBLE_DEVICES, so a job takes exclusive `flock`s on lock files
of one device and keeps them open while it lives. A device has `slots` lock files (S, the workflow's slots
per GPU); a job takes `need` of them (S / its model's `runs_per_gpu`). The OS drops the locks when the
process ends, so a killed job never leaves a stale one behind.

The workflow passes the share inside the device string: "auto" is a whole GPU (one slot of one), "auto@1/4"
one of its 4 slots, "cuda@2/4" two of 4 (`sparsenets.study.Grid.device_for`). Workflows that share a lock
dir must agree on the slots per GPU (the same `runs_per_gpu`): "auto" and "auto@1/4" lock different files.
"""
from __future__ import annotations

import fcntl
import os
import re
import sys
import time
from pathlib import Path
from typing import IO

import torch

LOCK_DIR_ENV = "SPARSENETS_GPU_LOCK_DIR"
DEFAULT_LOCK_DIR = "/tmp/sparsenets-gpu-locks"
SHARE = re.compile(r"(auto|cuda)@(\d+)/(\d+)")

_held: dict[Path, tuple[list[IO[str]], torch.device]] = {}  # lock dir -> the open lock files and their device


def parse_share(preference: str) -> tuple[str, int, int]:
    """("auto" | "cuda" | an explicit device, slots needed, slots per device) from "auto", "cuda@1/4", "cpu", ..."""
    match = SHARE.fullmatch(preference)
    if match is None:
        return preference, 1, 1
    kind, need, slots = match[1], int(match[2]), int(match[3])
    if not 1 <= need <= slots:
        raise ValueError(f"device {preference!r}: a job takes 1 to {slots} of a GPU's {slots} slots, not {need}")
    return kind, need, slots


def claim_device(preference: str = "auto", *, count: int | None = None, lock_dir: str | Path | None = None,
                 timeout: float = 3600.0, poll: float = 5.0) -> torch.device:
    """The device a job runs on: "auto" and "cuda" claim a free GPU share (or "auto" falls back to the CPU).

    `preference` may carry a share ("auto@1/4": one of a GPU's 4 slots). Waits up to `timeout` seconds while
    no device has enough free slots. `count` replaces the visible CUDA devices by that many fake ones (for
    tests). A process claims at most one share per lock dir: asking again returns the same device.
    """
    kind, need, slots = parse_share(preference)
    if kind not in ("auto", "cuda"):
        return torch.device(kind)
    ids = _device_ids(count)
    if not ids:
        if kind == "cuda":
            raise RuntimeError("device 'cuda' was asked for, but no CUDA device is visible")
        return torch.device("cpu")
    folder = Path(lock_dir or os.environ.get(LOCK_DIR_ENV) or DEFAULT_LOCK_DIR)
    if folder in _held:
        return _held[folder][1]
    folder.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout
    waiting = False
    while True:
        for index, locks in _candidates(folder, ids, need, slots):
            handles = _take(locks, need)
            if handles:
                device = torch.device("cuda", index)
                _held[folder] = (handles, device)
                if waiting:
                    _log(f"claimed {device} after waiting")
                return device
        if time.monotonic() >= deadline:
            raise RuntimeError(
                f"no GPU with {need} free slot(s) of {slots} after {timeout:.0f}s ({_holders(folder, ids, slots)}; "
                f"lock files in {folder}). Run snakemake with --resources gpu={len(ids)} (one job per GPU) or "
                f"gpu_slots={len(ids) * slots} ({slots} slots per GPU) so it never starts more GPU jobs than the "
                f"GPUs hold, or set ${LOCK_DIR_ENV} apart for another workflow")
        if not waiting:
            _log(f"no GPU has {need} free slot(s) ({_holders(folder, ids, slots)}); waiting up to {timeout:.0f}s")
            waiting = True
        time.sleep(poll)


def device_kind(device: torch.device) -> str:
    """What a run's seconds were measured on, for `plan --calibrate`: "cpu", or the GPU's name."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else device.type


def _candidates(folder: Path, ids: list[str], need: int, slots: int) -> list[tuple[int, list[Path]]]:
    """Where to look, in order. One slot: slot 0 of every device, then slot 1, ... so jobs spread over the
    devices. Several: each device's slots in turn (any `need` of them)."""
    def lock(key: str, slot: int) -> Path:
        return folder / (f"gpu-{key}.lock" if slots == 1 else f"gpu-{key}.slot{slot}.lock")

    if need == 1:
        return [(i, [lock(key, s)]) for s in range(slots) for i, key in enumerate(ids)]
    return [(i, [lock(key, s) for s in range(slots)]) for i, key in enumerate(ids)]


def _device_ids(count: int | None) -> list[str]:
    """Lock files are named by UUID, not index: two SLURM jobs on one node may each see their own GPU as cuda:0."""
    if count is not None:
        return [str(i) for i in range(count)]
    return [str(torch.cuda.get_device_properties(i).uuid) for i in range(torch.cuda.device_count())]


def _take(locks: list[Path], need: int) -> list[IO[str]]:
    """`need` of these lock files, all held, or none (what was taken is let go)."""
    handles: list[IO[str]] = []
    for path in locks:
        handle = _try_lock(path)
        if handle is not None:
            handles.append(handle)
            if len(handles) == need:
                return handles
    for handle in handles:
        handle.close()
    return []


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


def _holders(folder: Path, ids: list[str], slots: int) -> str:
    """Who held each slot last (a pid stays in a released lock file: a hint for whoever waits, not a proof)."""
    def pid(path: Path) -> str:
        return (path.read_text().strip() if path.exists() else "") or "?"

    return "; ".join(f"GPU {i}: pids " + " ".join(pid(p) for _, ps in _candidates(folder, [key], slots, slots)
                                                   for p in ps) for i, key in enumerate(ids))


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)
