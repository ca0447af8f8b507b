"""The tiny pipeline on a real SLURM cluster and against a real MLflow server on PostgreSQL."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cluster import REPO, SlurmCluster, postgres_mlflow_server, slurm_cluster  # noqa: F401 (fixtures)
from conftest import snakemake

# A slice of the tiny preset: enough jobs to fan out, few enough to keep `make test` short.
SLICE = {"gpus_per_job": 0,
         "presets": {"tiny": {"studies": {"phew": {"methods": ["random", "phew", "snip", "synflow"],
                                                   "densities": [0.2]}}}}}
TARGETS = ["results/phew/tables/runs.csv", "results/phew/figures/accuracy_vs_density.png"]
FAST_STATUS = ["--slurm-init-seconds-before-status-checks", "1", "--seconds-between-status-checks", "2"]


def slice_config(tmp_path: Path) -> list[str]:
    """Options taking several values: they go after the targets."""
    path = tmp_path / "slice.yaml"
    path.write_text(yaml.safe_dump(SLICE))
    return ["--configfile", str(REPO / "config.yaml"), str(path), "--config", "preset=tiny"]


def expected_jobs() -> set[str]:
    phew = yaml.safe_load((REPO / "config.yaml").read_text())["presets"]["tiny"]["studies"]["phew"]
    phew.update(SLICE["presets"]["tiny"]["studies"]["phew"])
    return {f"digits/mlp/{m}/d{float(d):.4g}/s{s}" for m in phew["methods"] for d in phew["densities"]
            for s in phew["seeds"]}


def check_runs(uri: str, workdir: Path) -> None:
    """Every job: its files, and exactly one finished MLflow run with every epoch's metrics."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("phew")
    runs = client.search_runs([exp.experiment_id])
    assert sorted(r.info.run_name for r in runs) == sorted(expected_jobs())
    for run in runs:
        assert run.info.status == "FINISHED", run.info.run_name
        metrics = json.loads((workdir / "results/phew/runs" / run.info.run_name / "metrics.json").read_text())
        history = client.get_metric_history(run.info.run_id, "test_acc")
        assert sorted((m.step, m.value) for m in history) == [(h["epoch"], h["test_acc"]) for h in metrics["history"]]


@pytest.mark.slurm
def test_tiny_pipeline_on_slurm(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    env = {**slurm_cluster.env, "SPARSENETS_TRACKING_URI": ""}
    snakemake(tmp_path, *TARGETS, "--profile", str(REPO / "workflow/profiles/slurm"), *FAST_STATUS,
              *slice_config(tmp_path), env=env, configfile=False)
    for target in TARGETS:
        assert (tmp_path / target).stat().st_size > 0
    assert list((tmp_path / "results/logs/slurm").rglob("*.log"))  # SLURM's own logs are kept
    check_runs(f"sqlite:///{tmp_path / 'results/mlflow.db'}", tmp_path)


@pytest.mark.tracking_server
def test_parallel_jobs_against_the_tracking_server(postgres_mlflow_server: str, tmp_path: Path) -> None:
    snakemake(tmp_path, *TARGETS, "--cores", "4", *slice_config(tmp_path),
              env={"SPARSENETS_TRACKING_URI": postgres_mlflow_server}, configfile=False)
    check_runs(postgres_mlflow_server, tmp_path)
    assert not (tmp_path / "results/mlflow.db").exists()  # nothing went to the default store


@pytest.mark.slurm
def test_a_failing_slurm_job_fails_the_workflow(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    (tmp_path / "Snakefile").write_text('rule fail:\n    output: "never.txt"\n    shell: "exit 3"\n')
    cmd = [sys.executable, "-m", "snakemake", "--profile", str(REPO / "workflow/profiles/slurm"), *FAST_STATUS]
    done = subprocess.run(cmd, cwd=tmp_path, env=slurm_cluster.env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert "SLURM status is: 'FAILED'" in done.stderr, done.stderr[-3000:]
    assert not (tmp_path / "never.txt").exists()
