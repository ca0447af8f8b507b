"""Stopping a job cleanly on SIGTERM or SIGINT: SLURM's time limit (`--signal`), `scancel`, preemption, Ctrl-C.

Two ways, one per kind of job:
- `exit_on_signals` (every command, set by the CLI): the signal raises `Terminated` where the job is, so
  every `finally` runs and an atomic write in progress removes its temporary file (`io.atomic_path`): no
  partial output, no temporary file, and the job exits with 128 + the signal's number.
- `stop_at_step` (the training loop): the handler only sets a flag, which the loop reads after each
  optimizer step; the job then writes a checkpoint of that step, marks its MLflow run KILLED and exits
  (`train.train`, `experiments.run_training`), within `GRACE_S` of the signal plus one step.
A second signal while stopping is ignored (Snakemake and SLURM may send several); SIGKILL is the hard stop.
Handlers are installed only in the main thread (Python's rule) and the previous ones restored afterwards.
"""
from __future__ import annotations

import contextlib
import signal
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

SIGNALS = (signal.SIGTERM, signal.SIGINT)
# What a stopping training job may take after the signal, besides finishing its current optimizer step:
# the checkpoint (a second or two even for ResNet-18 on a network file system) and its MLflow run's last
# writes, which wait for the tracking store at most TRACKING_WAIT_S. SLURM profile: --signal=TERM@120.
TRACKING_WAIT_S = 20.0
GRACE_S = 30.0


class Terminated(SystemExit):
    """The job stopped on a signal: exits with status 128 + its number (143 for SIGTERM, 130 for SIGINT)."""

    def __init__(self, signum: int, message: str = "") -> None:
        super().__init__(128 + signum)
        self.signum = signum
        self.name = signal.Signals(signum).name
        self.message = message or f"stopped by {self.name}"

    def __str__(self) -> str:
        return self.message


@contextlib.contextmanager
def _handlers(handler: Callable[[int, Any], None]) -> Iterator[bool]:
    """`handler` for SIGTERM and SIGINT within the block (the previous ones back after it); yields whether
    it could be installed (only the main thread may)."""
    if threading.current_thread() is not threading.main_thread():
        yield False
        return
    previous = {s: signal.signal(s, handler) for s in SIGNALS}
    try:
        yield True
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


@contextlib.contextmanager
def exit_on_signals() -> Iterator[None]:
    """SIGTERM and SIGINT raise `Terminated` (once: a second signal while it unwinds is ignored)."""
    def handler(signum: int, _frame: Any) -> None:
        for s in SIGNALS:
            signal.signal(s, signal.SIG_IGN)
        raise Terminated(signum)

    with _handlers(handler):
        yield


@dataclass
class StopFlag:
    """Set by a signal; read by the training loop at step boundaries."""

    signum: int = 0
    at: float = 0.0  # time.monotonic() of the signal

    def __bool__(self) -> bool:
        return self.signum != 0

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else ""

    def elapsed(self) -> float:
        """Seconds since the signal."""
        return time.monotonic() - self.at if self.signum else 0.0


_active: list[StopFlag] = []  # the flag of the training loop in progress (stop_requested)


def stop_requested() -> bool:
    """Whether a signal asked the training loop in progress to stop: what a callback waiting on something
    slow (the MLflow worker) reads, so as to give up waiting and let the loop stop."""
    return bool(_active and _active[-1])


@contextlib.contextmanager
def stop_at_step(log: Callable[[str], None] = print) -> Iterator[StopFlag]:
    """Within the block SIGTERM and SIGINT only set the flag (the first one; later ones are ignored)."""
    flag = StopFlag()

    def handler(signum: int, _frame: Any) -> None:
        if not flag:
            flag.signum, flag.at = signum, time.monotonic()

    with _handlers(handler) as installed:
        if installed:
            log(f"on SIGTERM or SIGINT: stop after the current step, checkpoint it, mark the MLflow run KILLED and "
                f"exit within {GRACE_S:g} s plus one step")
        _active.append(flag)
        try:
            yield flag
        finally:
            _active.remove(flag)


__all__ = ["GRACE_S", "SIGNALS", "StopFlag", "Terminated", "TRACKING_WAIT_S", "exit_on_signals", "stop_at_step",
           "stop_requested"]
