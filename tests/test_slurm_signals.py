"""A training job on a real SLURM cluster, submitted through the SLURM profile: `scancel`, then its time limit.

SLURM signals the job's step (srun, Snakemake's job step, our process); the job must stop after its step,
checkpoint it, mark its MLflow run KILLED (`killed_by: SIGTERM`) and exit; the rerun resumes it and ends with
the numbers of an uninterrupted run. The time limit is met through the profile's `--signal=TERM@120`.
"""
from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cluster import REPO, SlurmCluster, slurm_cluster  # noqa: F401
from sparsenets.experiments import make_mask, run_training
from sparsenets.study import Run
from sparsenets.tracking import KILLED_BY, init_store
from sparsenets.train import Recipe

FAST_STATUS = ["--slurm-init-seconds-before-status-checks", "1", "--seconds-between-status-checks", "2"]
RECIPE = {"epochs": 6, "batch_size": 4, "augment": False}  # 359 steps an epoch: a signal mostly lands mid-epoch
ENDLESS = {**RECIPE, "epochs": 100000}  # stopped by its time limit, never by its end
SNAKEFILE = """\
rule train:  # the profile's set-resources name it: it gets the workflow's SIGTERM before its time limit
    output: "run/metrics.json"
    log: "train.log"
    resources: runtime={minutes}
    shell: {shell}
"""
TRAIN = ("{py} -m sparsenets train --study phew --dataset digits --model mlp --method random --density 0.2 --seed 0 "
         "--data {data} --mask {mask} --recipe '{recipe}' --device cpu --out-dir run --tracking-uri {uri} > {{log}} 2>&1")


def workflow(tmp_path: Path, digits_npz: Path, recipe: dict, minutes: int) -> str:
    """A one-rule workflow in tmp_path training like the pipeline's train rule; the store's URI."""
    make_mask("mlp", digits_npz, "random", 0.2, 0, tmp_path / "mask.pt", device="cpu")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    init_store(uri, ["phew"])
    shell = TRAIN.format(py=sys.executable, data=digits_npz, mask=tmp_path / "mask.pt", uri=uri,
                         recipe=json.dumps(recipe).replace("{", "{{").replace("}", "}}"))  # Snakemake's braces
    (tmp_path / "Snakefile").write_text(SNAKEFILE.format(shell=repr(shell), minutes=minutes))
    return uri


def snakemake(cluster: SlurmCluster, tmp_path: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "snakemake", "--profile", str(REPO / "workflow/profiles/slurm"), *FAST_STATUS]
    return subprocess.Popen(cmd, cwd=tmp_path, env=cluster.env, stdin=subprocess.DEVNULL, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def wait_for(path: Path, pattern: str, proc: subprocess.Popen, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while not (path.exists() and re.search(pattern, path.read_text())):
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        assert time.monotonic() < deadline, f"no {pattern!r} in {path} after {timeout} s"
        time.sleep(0.5)
    return path.read_text()


def slurm_jobs(cluster: SlurmCluster) -> list[str]:
    out = subprocess.run(["squeue", "-h", "-o", "%i"], env=cluster.env, capture_output=True, text=True, check=True)
    return out.stdout.split()


def the_run(tmp_path: Path) -> tuple[str, dict[str, str]]:
    with sqlite3.connect(tmp_path / "mlflow.db") as con:
        [(run_id, status)] = con.execute("select r.run_uuid, r.status from runs r join tags t on "
                                         "t.run_uuid = r.run_uuid and t.key = 'job' where r.lifecycle_stage = 'active'")
        return status, dict(con.execute("select key, value from tags where run_uuid = ?", (run_id,)).fetchall())


def stopped_by_sigterm(tmp_path: Path, proc: subprocess.Popen) -> None:
    """The job stopped on SIGTERM after a step, checkpointed it, and its run is KILLED; Snakemake failed."""
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode != 0, out[-3000:]
    log = (tmp_path / "train.log").read_text()
    # after a step in mid-epoch, or (a signal that came during an evaluation) after the epoch
    stopped = re.search(r"stopped by SIGTERM [\d.]+ s after it, (at step \d+ \(epoch (\d+), batch (\d+)/\d+\)|after "
                        r"epoch (\d+))", log)
    assert stopped, log
    assert "MLflow run marked KILLED (killed_by: SIGTERM)" in log, log
    state = torch.load(tmp_path / "run/checkpoint.pt", weights_only=False)
    assert (state["epoch"], state.get("batch", 0)) == ((int(stopped[2]) - 1, int(stopped[3])) if stopped[2] else
                                                      (int(stopped[4]), 0))
    status, tags = the_run(tmp_path)
    assert (status, tags[KILLED_BY]) == ("KILLED", "SIGTERM")
    print(re.findall(r".*(?:stopped by|MLflow run marked).*", log))


@pytest.mark.slurm
def test_scancel_stops_training_after_its_step_and_the_rerun_ends_as_an_uninterrupted_run(
        slurm_cluster: SlurmCluster, digits_npz: Path, tmp_path: Path) -> None:
    workflow(tmp_path, digits_npz, RECIPE, minutes=30)
    proc = snakemake(slurm_cluster, tmp_path)
    wait_for(tmp_path / "train.log", r"epoch   1/", proc, timeout=600)
    [job] = slurm_jobs(slurm_cluster)
    subprocess.run(["scancel", job], env=slurm_cluster.env, check=True)
    stopped_by_sigterm(tmp_path, proc)
    run_id = torch.load(tmp_path / "run/checkpoint.pt", weights_only=False)["extra"].get("run_id")

    rerun = snakemake(slurm_cluster, tmp_path)
    out, _ = rerun.communicate(timeout=900)
    assert rerun.returncode == 0, out[-3000:]
    assert "resuming from run/checkpoint.pt after epoch" in (tmp_path / "train.log").read_text()
    reference = tmp_path / "reference"
    run_training(Run("digits", "mlp", "random", 0.2, 0, study="phew"), Recipe(**RECIPE), data_file=digits_npz,
                 mask_file=tmp_path / "mask.pt", out_dir=reference, device="cpu", log=lambda m: None)
    resumed, uninterrupted = (json.loads((d / "metrics.json").read_text()) for d in (tmp_path / "run", reference))
    for metrics in (resumed, uninterrupted):
        for row in metrics["history"]:
            row.pop("seconds")
    assert resumed == uninterrupted
    status, tags = the_run(tmp_path)
    assert status == "FINISHED" and KILLED_BY not in tags
    if run_id:  # its MLflow run was known when it stopped: the rerun continued it
        assert tags["resumed_after"] == "SIGTERM"


@pytest.mark.slurm
def test_the_time_limit_signals_training_through_the_profile_before_the_kill(
        slurm_cluster: SlurmCluster, digits_npz: Path, tmp_path: Path) -> None:
    """A 3-minute limit: the profile's --signal=TERM@120 comes 60 to 120 s in (SLURM checks every 30-60 s),
    well before the limit's own SIGTERM and SIGKILL."""
    workflow(tmp_path, digits_npz, ENDLESS, minutes=3)
    t0 = time.monotonic()
    proc = snakemake(slurm_cluster, tmp_path)
    stopped_by_sigterm(tmp_path, proc)
    print(f"stopped {time.monotonic() - t0:.0f} s after submission, with a 180 s time limit")
    slurm_logs = "".join(p.read_text() for p in (tmp_path / "results/logs/slurm").rglob("*.log"))
    assert "DUE TO TIME LIMIT" not in slurm_logs  # it stopped on its own, before SLURM's kill
