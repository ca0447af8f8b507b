"""The whole DAG: the tiny preset through Snakemake, timed, with the share of it that is training; and
the quick preset's wall time on this machine, estimated from measured costs and the preset's jobs
(sparsenets.study.expand: the jobs Snakemake's rules look up), each priced by the command it runs
(sparsenets.commands.for_job).
"""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from sparsenets import commands
from sparsenets.commands import Command
from sparsenets.study import Job, expand

from . import REPO, config
from .train_step import CIFAR_TEST, CIFAR_TRAIN

SNAKEMAKE = Path(sys.executable).with_name("snakemake")
# Commands priced at their start-up alone (seconds of work, not minutes); the others by what they compute (`work`).
# A command in neither fails the pricing, naming the kind of job that runs it.
STARTUP_ONLY = ("data", "mlflow-init", "mlflow-summary", "imp-mask", "table", "paper-table", "figure", "claims",
                "report")


@dataclass(frozen=True)
class Rates:
    """What a preset's jobs cost here: training and test images per second by (model, topology) and model, seconds
    per mask by (model, method), per further-pruning fraction by model, and every job's start-up."""

    train_ips: Mapping[tuple[str, str], float]
    eval_ips: Mapping[str, float]
    mask_s: Mapping[tuple[str, str], float]
    fraction_s: Mapping[str, float]
    job_s: float


def snakemake(work: str | Path, preset: str, *args: str) -> subprocess.CompletedProcess:
    """Snakemake on the repository's workflow, in `work`, with the default tracking store."""
    cmd = [str(SNAKEMAKE), "--snakefile", str(REPO / "Snakefile"), "--configfile", str(REPO / "config.yaml"),
           "--directory", str(work), "--config", f"preset={preset}", *args]
    env = {k: v for k, v in os.environ.items() if k != "SPARSENETS_TRACKING_URI"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode:
        raise RuntimeError(f"{shlex.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return proc


def tiny_preset(cores: int) -> dict[str, Any]:
    """Wall time of the tiny preset from scratch, and the summed per-epoch seconds of its runs."""
    with tempfile.TemporaryDirectory(prefix="sparsenets-bench-tiny-") as work:
        t0 = time.perf_counter()
        snakemake(work, "tiny", "--cores", str(cores))
        wall = time.perf_counter() - t0
        histories = [json.loads(p.read_text())["history"] for p in Path(work, "results").rglob("metrics.json")]
    training = sum(row["seconds"] for history in histories for row in history)
    return {"tiny_wall_s": wall, "tiny_runs": len(histories), "tiny_training_s": training,
            "tiny_training_share": training / wall}


def preset_jobs(preset: str) -> list[Job]:
    """Every job of `preset` from scratch."""
    return expand(config(), preset)


def work(job: Job, command: Command, rates: Rates) -> float:
    """A job's seconds beyond its start-up: its training epochs (a pass over the training subset and one over CIFAR's
    test set each), its mask, or its further-pruning fractions."""
    if isinstance(command, commands.Train):
        recipe = command.recipe
        n_train = min(CIFAR_TRAIN, recipe.get("train_subset") or CIFAR_TRAIN)
        n_train -= n_train % recipe["batch_size"]  # a training epoch drops the last partial batch
        model = command.model
        return recipe["epochs"] * (n_train / rates.train_ips[model, command.topology] + CIFAR_TEST / rates.eval_ips[model])
    if isinstance(command, commands.Mask):
        return rates.mask_s[command.model, _mask_method(command)]
    if isinstance(command, commands.Sensitivity):
        return len(command.fractions) * rates.fraction_s[job.run.model]
    if command.name in STARTUP_ONLY:
        return 0.0
    raise ValueError(f"job kind {job.kind!r} (command {command.name!r}) has no price: add it to STARTUP_ONLY or "
                     "to work() in benchmarks/end_to_end.py")


def _mask_method(command: Command) -> str:
    """The method a mask is priced as: a layer-matched mask (random-like) makes random's draws (it needs another
    run's mask to be measured itself)."""
    return "random" if command.method == "random-like" else command.method


def estimate(jobs: list[Job], rates: Rates, slots: int) -> dict[str, Any]:
    """Wall seconds of a preset's jobs packed `slots` at a time: every job's start-up plus its `work`, at the
    measured rates. Jobs are assumed to fill the slots perfectly (the order the IMP chain imposes is ignored)."""
    seconds: Counter = Counter()
    for job in jobs:
        command = commands.for_job(job)
        seconds[command.name] += rates.job_s + work(job, command, rates)
    return {"jobs": len(jobs), "core_seconds_by_command": dict(seconds), "slots": slots,
            "estimate_s": sum(seconds.values()) / slots, "job_counts": dict(Counter(j.kind for j in jobs))}


def needs(jobs: list[Job]) -> dict[str, dict]:
    """What pricing `jobs` measures, each once: (model, topology) -> the topology options of its dearest run,
    model -> None for evaluation and sensitivity, (model, mask method) -> its densest mask (PHEW walks until full)."""
    out: dict[str, dict] = {"train": {}, "eval": {}, "mask": {}, "fraction": {}}
    for job in jobs:
        c = commands.for_job(job)
        if isinstance(c, commands.Train):
            key = (c.model, c.topology)
            if key not in out["train"] or "freeze_epoch" in out["train"][key]:  # DNW frozen after k: static
                out["train"][key] = dict(c.topology_options)
            out["eval"][c.model] = None
        elif isinstance(c, commands.Mask):
            key = (c.model, _mask_method(c))
            out["mask"][key] = max(out["mask"].get(key, 0.0), c.density)
        elif isinstance(c, commands.Sensitivity):
            out["fraction"][job.run.model] = None
    return out


def nominal(jobs: list[Job]) -> Rates:
    """Rates of one image per millisecond, one second a mask or fraction, five seconds a start-up: pricing at these
    checks that every job of a preset has a price (`python -m benchmarks --quick`), not what it costs."""
    need = needs(jobs)
    return Rates({k: 1000.0 for k in need["train"]}, {k: 1000.0 for k in need["eval"]},
                 {k: 1.0 for k in need["mask"]}, {k: 1.0 for k in need["fraction"]}, 5.0)


def slots() -> int:
    return max(1, (os.cpu_count() or 1) // config()["threads_per_job"])


def quick_preset_estimate(measure_train: Callable[[str, str, dict], float], measure_eval: Callable[[str], float],
                          measure_mask: Callable[[str, str, float], float], measure_fraction: Callable[[str], float],
                          job_s: float) -> dict[str, Any]:
    """The quick preset's estimate: each (model, topology), model, mask method and sensitivity model is
    measured once."""
    jobs = preset_jobs("quick")
    need = needs(jobs)
    rates = Rates({k: measure_train(*k, options) for k, options in sorted(need["train"].items())},
                  {m: measure_eval(m) for m in sorted(need["eval"])},
                  {k: measure_mask(*k, d) for k, d in sorted(need["mask"].items())},
                  {m: measure_fraction(m) for m in sorted(need["fraction"])}, job_s)
    return estimate(jobs, rates, slots())
