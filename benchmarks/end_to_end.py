"""The whole DAG: the tiny preset through Snakemake, timed, with the share of it that is training; and
the quick preset's wall time on this machine, estimated from measured costs and the preset's jobs
(sparsenets.study.expand: the jobs Snakemake's rules look up).
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
from pathlib import Path
from typing import Any, Callable

from sparsenets.study import Job, expand

from . import REPO, config
from .train_step import CIFAR_TEST, CIFAR_TRAIN

SNAKEMAKE = Path(sys.executable).with_name("snakemake")
COMMANDS = {  # kind of job (its rule) -> the `python -m sparsenets` command it runs
    "dataset": "data", "mlflow_init": "mlflow-init", "mask": "mask", "mask_layer_matched": "mask",
    "imp_mask": "imp-mask", "train": "train", "train_dense": "train", "train_reinit": "train",
    "sensitivity": "sensitivity", "table": "table", "paper_table": "paper-table", "figure": "figure", "claims": "claims", "report": "report",
}


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


def priced_method(job: Job) -> str:
    """The method a mask job is priced as: a layer-matched mask makes random's draws (it needs another run's
    mask to be measured itself)."""
    return "random" if job.kind == "mask_layer_matched" else job.run.method


def estimate(jobs: list[Job], *, train_ips: dict[tuple[str, str], float], eval_ips: dict[str, float],
             mask_s: dict[tuple[str, str], float], fraction_s: dict[str, float], job_s: float,
             slots: int) -> dict[str, Any]:
    """Wall seconds of a preset's jobs packed `slots` at a time: every job's start-up, plus its training
    epochs (a training pass over the subset, a test pass over CIFAR's test set), its mask or its
    further-pruning fractions, at the measured rates. Jobs are assumed to fill the slots perfectly
    (the order the IMP chain imposes is ignored)."""
    seconds: Counter = Counter()
    for job in jobs:
        cmd = COMMANDS[job.kind]
        seconds[cmd] += job_s
        if cmd == "train":
            recipe = json.loads(job.params["recipe"])
            n_train = min(CIFAR_TRAIN, recipe.get("train_subset") or CIFAR_TRAIN)
            n_train -= n_train % recipe["batch_size"]  # a training epoch drops the last partial batch
            epoch = n_train / train_ips[job.run.model, job.params["topology"]] + CIFAR_TEST / eval_ips[job.run.model]
            seconds[cmd] += recipe["epochs"] * epoch
        elif cmd == "mask":
            seconds[cmd] += mask_s[job.run.model, priced_method(job)]
        elif cmd == "sensitivity":
            seconds[cmd] += len(job.params["fractions"].split()) * fraction_s[job.run.model]
    total = sum(seconds.values())
    return {"jobs": len(jobs), "core_seconds_by_command": dict(seconds), "slots": slots,
            "estimate_s": total / slots}


def quick_preset_estimate(measure_train: Callable[[str, str, dict], float], measure_eval: Callable[[str], float],
                          measure_mask: Callable[[str, str, float], float], measure_fraction: Callable[[str], float],
                          job_s: float) -> dict[str, Any]:
    """The quick preset's estimate: each (model, topology), model, mask method and sensitivity model is
    measured once."""
    jobs = preset_jobs("quick")
    trains: dict[tuple[str, str], dict] = {}  # (model, topology) -> the options of its dearest run
    for j in (j for j in jobs if COMMANDS[j.kind] == "train"):
        key = (j.run.model, j.params["topology"])
        if key not in trains or "freeze_epoch" in trains[key]:  # DNW frozen after k epochs trains statically
            trains[key] = json.loads(j.params["options"])
    models = {m for m, _ in trains}
    sensitivity = {j.run.model for j in jobs if j.kind == "sensitivity"}
    masks: dict[tuple[str, str], float] = {}
    for j in jobs:
        if COMMANDS[j.kind] == "mask":  # the densest mask of a kind costs the most (PHEW walks until it is full)
            key = (j.run.model, priced_method(j))
            masks[key] = max(masks.get(key, 0.0), float(j.run.density))
    slots = max(1, (os.cpu_count() or 1) // config()["threads_per_job"])
    out = estimate(jobs, train_ips={k: measure_train(*k, trains[k]) for k in sorted(trains)},
                   eval_ips={m: measure_eval(m) for m in sorted(models)},
                   mask_s={k: measure_mask(*k, d) for k, d in sorted(masks.items())},
                   fraction_s={m: measure_fraction(m) for m in sorted(sensitivity)}, job_s=job_s, slots=slots)
    out["job_counts"] = dict(Counter(COMMANDS[j.kind] for j in jobs))
    return out
