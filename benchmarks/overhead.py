"""Per-job start-up: from a training job's process start to its first step, against a bare `import torch`.

The job is a tiny-preset one run as the Snakemake rule runs it: `python -m sparsenets train` on
digits, tracked in a SQLite store that `mlflow-init` made beforehand. The job reports the moment
its first step starts when SPARSENETS_BENCH_FIRST_STEP is set.
"""
from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sparsenets import data
from sparsenets.experiments import make_mask

from . import alternate, config, ratio

PY = sys.executable
FIRST_STEP = re.compile(r"first step at (\d+\.\d+)")


def job_command(work: Path) -> list[str]:
    """Data, a mask and a tracking store in `work`, and the command of a training job that uses them."""
    data.prepare("digits", work / "digits.npz")
    make_mask("mlp", work / "digits.npz", "random", 0.2, 0, work / "mask.pt", device="cpu")
    uri = f"sqlite:///{work / 'mlflow.db'}"
    subprocess.run([PY, "-m", "sparsenets", "mlflow-init", "--uri", uri, "--experiments", "phew"], check=True,
                   capture_output=True, cwd=work)
    cfg = config()
    return [PY, "-m", "sparsenets", "train", "--study", "phew", "--dataset", "digits", "--data", "digits.npz",
            "--model", "mlp", "--method", "random", "--density", "0.2", "--seed", "0", "--mask", "mask.pt",
            "--recipe", json.dumps(cfg["recipes"]["tiny"]), "--device", cfg["device"],
            "--threads", str(cfg["threads_per_job"]), "--tracking-uri", uri, "--out-dir", "run"]


def job_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "SPARSENETS_TRACKING_URI"}
    return {**env, "SPARSENETS_BENCH_FIRST_STEP": "1"}


def time_job(cmd: list[str], cwd: Path) -> tuple[float, float]:
    """Seconds from launch to the first step, and to the end of the job."""
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=cwd, env=job_env(), capture_output=True, text=True)
    total = time.time() - t0
    match = FIRST_STEP.search(proc.stdout)
    if proc.returncode or match is None:
        raise RuntimeError(f"training job failed or never reported its first step:\n{proc.stdout[-2000:]}"
                           f"{proc.stderr[-2000:]}")
    return float(match.group(1)) - t0, total


def time_import_torch() -> float:
    t0 = time.perf_counter()
    subprocess.run([PY, "-c", "import torch"], check=True)
    return time.perf_counter() - t0


def import_seconds(cmd: list[str], cwd: Path, floor: float = 0.1) -> dict[str, float]:
    """Where a job's start-up goes: cumulative seconds of each top-level import above `floor` (-X importtime)."""
    proc = subprocess.run([PY, "-X", "importtime", *cmd[1:]], cwd=cwd, env=job_env(), capture_output=True,
                          text=True, check=True)
    out = {}
    for line in proc.stderr.splitlines():
        parts = line.removeprefix("import time:").split("|")
        if len(parts) == 3 and parts[1].strip().isdigit() and not parts[2].startswith("  "):
            seconds = int(parts[1]) / 1e6
            if seconds >= floor:
                out[parts[2].strip()] = round(seconds, 2)
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def job_overhead(rounds: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="sparsenets-bench-job-") as tmp:
        work = Path(tmp)
        cmd = job_command(work)
        totals: list[float] = []

        def job() -> float:
            first, total = time_job(cmd, work)
            totals.append(total)
            return first

        seconds = alternate({"job": job, "import_torch": time_import_torch}, rounds)
        imports = import_seconds(cmd, work)
    return {
        "job_first_step_s": statistics.median(seconds["job"]),
        "job_total_s": statistics.median(totals[-rounds:]),
        "import_torch_s": statistics.median(seconds["import_torch"]),
        "job_overhead_ratio": ratio(seconds["job"], seconds["import_torch"]),
        "job_import_s": imports,
    }
