"""The cluster path end to end: the repo's SLURM profile on a real cluster, parallel writers on the server."""

import subprocess
import sys
from pathlib import Path

import pytest

from cluster import REPO, SlurmCluster, postgres_mlflow_server, slurm_cluster  # noqa: F401 (fixtures)

# The plugin first looks at a job after 40 s by default: far longer than these jobs take.
FAST_STATUS = ["--slurm-init-seconds-before-status-checks", "1", "--seconds-between-status-checks", "2"]

THREE_JOBS = """
localrules: all

rule all:
    input: expand("out/{i}.txt", i=range(3))

rule job:
    output: "out/{i}.txt"
    shell: "echo $SLURM_JOB_ID > {output}"
"""

FAILING_JOB = """
rule fail:
    output: "never.txt"
    shell: "exit 3"
"""


def run_on_slurm(cluster: SlurmCluster, workdir: Path, snakefile: str) -> subprocess.CompletedProcess:
    """Run the real snakemake CLI with the repo's SLURM profile, as a user would."""
    (workdir / "Snakefile").write_text(snakefile)
    cmd = [sys.executable, "-m", "snakemake", "--profile", str(REPO / "workflow/profiles/slurm"), *FAST_STATUS]
    return subprocess.run(cmd, cwd=workdir, env=cluster.env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slurm
def test_jobs_run_as_slurm_jobs(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    done = run_on_slurm(slurm_cluster, tmp_path, THREE_JOBS)
    assert done.returncode == 0, done.stderr[-3000:]
    job_ids = {(tmp_path / f"out/{i}.txt").read_text().strip() for i in range(3)}
    assert len(job_ids) == 3 and all(job_id.isdigit() for job_id in job_ids), job_ids
    assert len(list((tmp_path / "results/logs/slurm").rglob("*.log"))) == 3  # the profile keeps every log


@pytest.mark.slurm
def test_failing_slurm_job_fails_the_workflow(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    done = run_on_slurm(slurm_cluster, tmp_path, FAILING_JOB)
    assert done.returncode != 0
    assert "SLURM status is: 'FAILED'" in done.stderr, done.stderr[-3000:]
    assert not (tmp_path / "never.txt").exists()


WRITER = """
import sys
import mlflow

uri, experiment_id, name, steps = sys.argv[1:]
mlflow.set_tracking_uri(uri)
with mlflow.start_run(experiment_id=experiment_id, run_name=name):
    for step in range(int(steps)):
        mlflow.log_metrics({"loss": 1.0 / (step + 1), "step_x10": 10.0 * step}, step=step)
    mlflow.log_text(name, "writer.txt")
"""


@pytest.mark.tracking_server
def test_parallel_writers_all_land(postgres_mlflow_server: str, tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    client, steps, names = MlflowClient(postgres_mlflow_server), 5, [f"writer{i}" for i in range(4)]
    experiment_id = client.create_experiment("smoke")  # once, before the fan-out
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, postgres_mlflow_server, experiment_id, name, str(steps)],
                                stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for name in names]
    for writer in writers:
        _, err = writer.communicate(timeout=120)
        assert writer.returncode == 0, err[-3000:]

    runs = {run.info.run_name: run for run in client.search_runs([experiment_id])}
    assert sorted(runs) == names
    for name, run in runs.items():
        assert run.info.status == "FINISHED"
        loss = client.get_metric_history(run.info.run_id, "loss")
        assert sorted((m.step, m.value) for m in loss) == [(s, 1.0 / (s + 1)) for s in range(steps)]
        assert len(client.get_metric_history(run.info.run_id, "step_x10")) == steps
        artifact = client.download_artifacts(run.info.run_id, "writer.txt", str(tmp_path))
        assert Path(artifact).read_text() == name  # uploaded over HTTP, no shared file system needed
