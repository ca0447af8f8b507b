"""The whole DAG: the tiny preset through Snakemake, timed, with the share of it that is training; and
the quick preset's wall time on this machine, estimated from measured costs and Snakemake's own job list.
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

from sparsenets.cli import build_parser

from . import REPO, config
from .train_step import CIFAR_TEST, CIFAR_TRAIN

SNAKEMAKE = Path(sys.executable).with_name("snakemake")
PRICED_AS = {"random-like": "random"}  # the same draws; it needs another run's mask to be measured itself


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


def preset_jobs(preset: str) -> list[Any]:
    """Every job of `preset` from scratch, as the arguments its `python -m sparsenets` command parses to."""
    with tempfile.TemporaryDirectory(prefix="sparsenets-bench-dry-") as work:
        out = snakemake(work, preset, "-n", "-p").stdout
    parser, jobs = build_parser(), []
    for line in out.splitlines():
        words = shlex.split(line.removeprefix("Shell command:")) if line.startswith("Shell command:") else []
        if "sparsenets" in words:  # every rule but `all`, which runs nothing
            words = words[words.index("sparsenets") + 1:]
            jobs.append(parser.parse_args(words[:words.index(">")] if ">" in words else words))
    return jobs


def model_of_run(run_dir: str) -> str:
    """results/{study}/runs/{dataset}/{model}/...: the model of a run folder."""
    parts = Path(run_dir).parts
    return parts[parts.index("runs") + 2]


def estimate(jobs: list[Any], *, train_ips: dict[tuple[str, str], float], eval_ips: dict[str, float],
             mask_s: dict[tuple[str, str], float], fraction_s: dict[str, float], job_s: float,
             slots: int) -> dict[str, Any]:
    """Wall seconds of a preset's jobs packed `slots` at a time: every job's start-up, plus its training
    epochs (a training pass over the subset, a test pass over CIFAR's test set), its mask or its
    further-pruning fractions, at the measured rates. Jobs are assumed to fill the slots perfectly
    (the order the IMP chain imposes is ignored)."""
    seconds: Counter = Counter()
    for job in jobs:
        seconds[job.cmd] += job_s
        if job.cmd == "train":
            recipe = job.recipe
            n_train = min(CIFAR_TRAIN, recipe.get("train_subset") or CIFAR_TRAIN)
            n_train -= n_train % recipe["batch_size"]  # a training epoch drops the last partial batch
            epoch = n_train / train_ips[job.model, job.topology] + CIFAR_TEST / eval_ips[job.model]
            seconds[job.cmd] += recipe["epochs"] * epoch
        elif job.cmd == "mask":
            seconds[job.cmd] += mask_s[job.model, PRICED_AS.get(job.method, job.method)]
        elif job.cmd == "sensitivity":
            seconds[job.cmd] += len(job.fractions) * fraction_s[model_of_run(job.run_dir)]
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
    for j in (j for j in jobs if j.cmd == "train"):
        key = (j.model, j.topology)
        if key not in trains or "freeze_epoch" in trains[key]:  # DNW frozen after k epochs trains statically
            trains[key] = j.topology_options
    models = {m for m, _ in trains}
    sensitivity = {model_of_run(j.run_dir) for j in jobs if j.cmd == "sensitivity"}
    masks: dict[tuple[str, str], float] = {}
    for j in jobs:
        if j.cmd == "mask":  # the densest mask of a kind costs the most (PHEW walks until it is full)
            key = (j.model, PRICED_AS.get(j.method, j.method))
            masks[key] = max(masks.get(key, 0.0), j.density)
    slots = max(1, (os.cpu_count() or 1) // config()["threads_per_job"])
    out = estimate(jobs, train_ips={k: measure_train(*k, trains[k]) for k in sorted(trains)},
                   eval_ips={m: measure_eval(m) for m in sorted(models)},
                   mask_s={k: measure_mask(*k, d) for k, d in sorted(masks.items())},
                   fraction_s={m: measure_fraction(m) for m in sorted(sensitivity)}, job_s=job_s, slots=slots)
    out["job_counts"] = dict(Counter(j.cmd for j in jobs))
    return out
