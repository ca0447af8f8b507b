"""The console's progress line: which stage the run is in, how many jobs are done, and the time left.

Snakemake prints a block of 6-10 lines per job (3,204 lines for the quick preset); a researcher wants to know
where the run is and when it ends. `Progress` is fed Snakemake's log events (through the logger plugin
`snakemake_logger_plugin_sparsenets`, `snakemake --logger sparsenets`) and answers one line; the whole log
still goes to .snakemake/log/. Torch-free and Snakemake-free, so it is tested with plain events.

The estimate prices each job still to run by the mean seconds its rule's finished jobs took (as
`python -m sparsenets plan --calibrate` does after a run; a rule none of whose jobs has finished yet takes the
mean of all finished jobs) and divides by the jobs the run has kept going at once so far.
"""
from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

# The pipeline's stages, in order, for each kind of job (sparsenets.study.KINDS: a test checks both agree).
STAGES = {
    "dataset": "data", "mlflow_init": "data",
    "mask": "masks", "imp_mask": "masks", "mask_layer_matched": "masks",
    "train": "training", "train_dense": "training", "train_reinit": "training", "train_prune": "training",
    "sensitivity": "analysis", "table": "analysis", "paper_table": "analysis", "claims": "analysis",
    "mlflow_summary": "analysis",
    "figure": "figures", "report": "report",
}
NOT_COUNTED = {"all"}  # Snakemake's target rule: no work


def stage(rule: str) -> str:
    return STAGES.get(rule, rule)


def duration(seconds: float) -> str:
    """'45 s', '12 min', '3 h 05 min': as precise as an estimate deserves."""
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"


@dataclass
class Progress:
    """What the run has done so far; `line()` says it in one line."""

    clock: Callable[[], float] = time.monotonic
    planned: Counter = field(default_factory=Counter)  # jobs per rule this run will execute
    running: dict = field(default_factory=dict)  # jobid -> (rule, start)
    took: dict = field(default_factory=lambda: defaultdict(list))  # rule -> seconds of each finished job
    first_start: float | None = None

    def plan(self, stats: dict) -> None:
        """Snakemake's job counts per rule (its RUN_INFO 'Job stats')."""
        self.planned = Counter({rule: int(n) for rule, n in stats.items() if rule != "total" and rule not in NOT_COUNTED})

    def started(self, jobid: int, rule: str) -> None:
        if rule in NOT_COUNTED:
            return
        now = self.clock()
        self.first_start = now if self.first_start is None else self.first_start
        self.running[jobid] = (rule, now)

    def finished(self, jobid: int) -> None:
        if jobid in self.running:
            rule, start = self.running.pop(jobid)
            self.took[rule].append(self.clock() - start)

    @property
    def done(self) -> int:
        return sum(len(s) for s in self.took.values())

    @property
    def total(self) -> int:
        return sum(self.planned.values()) or self.done + len(self.running)

    def seconds_left(self) -> float | None:
        """Job-seconds still to run over the jobs kept going at once; None before any job has finished."""
        if not self.done:
            return None
        now = self.clock()
        mean_all = sum(sum(s) for s in self.took.values()) / self.done
        price = {rule: sum(s) / len(s) for rule, s in self.took.items()}
        left = {rule: n - len(self.took.get(rule, ())) for rule, n in self.planned.items()}
        work = sum(max(0, n) * price.get(rule, mean_all) for rule, n in left.items())
        work -= sum(min(now - start, price.get(rule, mean_all)) for rule, start in self.running.values())
        busy = sum(sum(s) for s in self.took.values()) + sum(now - start for _, start in self.running.values())
        at_once = max(1.0, busy / max(now - self.first_start, 1e-9))
        return max(0.0, work) / at_once

    def current_stage(self) -> str:
        """The earliest stage with a job running (or, between jobs, still to run)."""
        order = list(dict.fromkeys(STAGES.values()))
        running = {stage(rule) for rule, _ in self.running.values()}
        pending = {stage(rule) for rule, n in self.planned.items() if n > len(self.took.get(rule, ()))}
        stages = running or pending
        return min(stages, key=lambda s: order.index(s) if s in order else len(order)) if stages else "done"

    def line(self) -> str:
        """e.g. 'training: 57/147 jobs done (39 %), 14 running (train 12, sensitivity 2); about 6 min left'."""
        total = max(self.total, 1)
        running = Counter(rule for rule, _ in self.running.values())
        now = ", ".join(f"{rule} {n}" for rule, n in running.most_common())
        left = self.seconds_left()
        estimate = ("time left: after the first job" if left is None else
                    "done" if self.done >= self.total and not self.running else f"about {duration(left)} left")
        return (f"{self.current_stage()}: {self.done}/{self.total} jobs done ({100 * self.done / total:.0f} %), "
                f"{len(self.running)} running" + (f" ({now})" if now else "") + f"; {estimate}")
