"""The tiny pipeline on a real SLURM cluster and against a real MLflow server on PostgreSQL."""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from cluster import (REPO, SlurmCluster, TrackingServer, postgres_mlflow_server, slurm_cluster,  # noqa: F401
                     stop_group, tracking_server)
from conftest import SNAKEMAKE, snakemake
from sparsenets.tracking import OUTAGE_ENV, RunTracker, Tracking, TrackingOutage

# A slice of the tiny preset: enough jobs to fan out, few enough to keep `make test` short.
SLICE = {"gpus_per_job": 0,
         "presets": {"tiny": {"studies": {"phew": {"methods": ["random", "phew", "snip", "synflow"],
                                                   "densities": [0.2]}}}}}
TARGETS = ["results/phew/tables/runs.csv", "results/phew/figures/accuracy_vs_density.png"]
FAST_STATUS = ["--slurm-init-seconds-before-status-checks", "1", "--seconds-between-status-checks", "2"]


def slice_config(tmp_path: Path, **extra: dict) -> list[str]:
    """Options taking several values: they go after the targets. `extra` config blocks go over SLICE."""
    path = tmp_path / "slice.yaml"
    path.write_text(yaml.safe_dump(merged(SLICE, extra)))
    return ["--configfile", str(REPO / "config.yaml"), str(path), "--config", "preset=tiny"]


def merged(base: dict, over: dict) -> dict:
    """`base` with `over` laid on top, nested blocks merged key by key (as Snakemake merges config files)."""
    out = dict(base)
    for key, value in over.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


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
    runs = [r for r in client.search_runs([exp.experiment_id]) if "job" in r.data.tags]  # not parents, summaries
    assert sorted(r.data.tags["job"] for r in runs) == sorted(expected_jobs())
    for run in runs:
        job = run.data.tags["job"]
        assert run.info.status == "FINISHED", job
        metrics = json.loads((workdir / "results/phew/runs" / job / "metrics.json").read_text())
        history = client.get_metric_history(run.info.run_id, "test_acc")
        assert sorted((m.step, m.value) for m in history) == [(h["epoch"], h["test_acc"]) for h in metrics["history"]]
    check_hierarchy(client, exp.experiment_id, runs)


def check_hierarchy(client, experiment_id: str, runs: list) -> None:
    """One live parent per method, every job's run nested under its method's, with its dataset as an input
    and mask.pt, structure.json and metrics.json as artifacts (tests/test_mlflow_ui.py: the same on SQLite)."""
    from sparsenets.tracking import PARENT, PARENT_KEY, artifact_dir

    parents = [r for r in client.search_runs([experiment_id]) if PARENT_KEY in r.data.tags]
    by_key = {r.data.tags[PARENT_KEY]: r.info.run_id for r in parents}
    assert len(by_key) == len(parents) == len({r.data.tags["method"] for r in runs})
    for run in runs:
        tags = run.data.tags
        assert tags[PARENT] == by_key[f"phew/{tags['dataset']}/{tags['model']}/{tags['method']}"], tags["job"]
        assert [i.dataset.name for i in run.inputs.dataset_inputs] == ["digits"], tags["job"]
        local = artifact_dir(client.tracking_uri, run.info.artifact_uri)  # a SQLite store's relative location
        names = {p.name for p in local.iterdir()} if local else {a.path for a in client.list_artifacts(run.info.run_id)}
        assert names == {"mask.pt", "structure.json", "metrics.json"}, tags["job"]


def slurm_submissions(logdir: Path) -> dict[str, int]:
    """SLURM jobs per rule (`rule_train`) or batch (`group_masks_mask`: group, then its rules): the plugin keeps one
    log per SLURM job, named by its id."""
    return {folder.name: len({log.stem for log in folder.rglob("*.log")}) for folder in sorted(logdir.iterdir())}


@pytest.mark.slurm
def test_tiny_pipeline_on_slurm(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    env = {**slurm_cluster.env, "SPARSENETS_TRACKING_URI": ""}
    snakemake(tmp_path, *TARGETS, "--profile", str(REPO / "workflow/profiles/slurm"), *FAST_STATUS,
              *slice_config(tmp_path), env=env, configfile=False)
    for target in TARGETS:
        assert (tmp_path / target).stat().st_size > 0
    check_runs(f"sqlite:///{tmp_path / 'results/mlflow.db'}", tmp_path)
    # one SLURM job per training run; the 4 masks, the table and the figure in one batch per stage (one job each
    # without groups: 12 submissions with dataset and mlflow_init, which now run on the login node)
    submitted = slurm_submissions(tmp_path / "results/logs/slurm")
    assert submitted == {"group_figures_figure": 1, "group_masks_mask": 1, "group_tables_table": 1,
                         "rule_train": len(expected_jobs())}


@pytest.mark.snakemake
def test_slurm_profile_batches_short_jobs_and_gives_gpu_jobs_a_cpu_more(tmp_path: Path) -> None:
    """A dry run through the profile (no cluster needed): one batch per stage, and each rule's SLURM resources."""
    out = snakemake(tmp_path, "-n", "--profile", str(REPO / "workflow/profiles/slurm"), "--config", "preset=tiny",
                    configfile=True).stdout
    # batches of these stages only (a stage may come in several: with the tiny preset's variant studies, masks in two)
    assert set(re.findall(r"Group job (\w+)", out)) == {"curves", "figures", "masks", "tables"}
    resources = {rule: res for rule, res in re.findall(r"rule (\w+):\n(?:.*\n)*?\s+resources: (.*)", out)}
    for rule in ("train", "mask", "sensitivity"):  # GPU jobs: threads_per_job (1) + 1 CPUs, a GPU, its slots
        assert {"cpus_per_task=2", "gpu=1", "gpu_slots=1"} <= set(resources[rule].split(", ")), rule
    assert "runtime=5" in resources["mask"].split(", ") and "cpus_per_task=1" in resources["table"].split(", ")


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


# Long enough that every job is still training when the server stops: 180 steps per epoch, 0.2-1 s on 2 cores.
OUTAGE_RECIPE = {"epochs": 60, "batch_size": 8, "lr": 0.01, "milestones": [40], "augment": False}
OUTAGE_S = 6


def epochs_done(workdir: Path) -> dict[str, int]:
    """Epochs each running job has finished so far, from its log."""
    logs = workdir / "results/logs/phew/runs"
    return {job: len(re.findall(r"epoch +\d+/\d+ ", (logs / f"{job}.log").read_text()))
            if (logs / f"{job}.log").exists() else 0 for job in expected_jobs()}


@pytest.mark.tracking_server
def test_jobs_outlast_a_tracking_server_outage(tracking_server: TrackingServer, tmp_path: Path) -> None:
    """The server goes down for several epochs of four training jobs and comes back on the same port and
    database: the jobs buffer their MLflow writes, resend them, and the store ends with every epoch once."""
    config = slice_config(tmp_path, recipes={"outage": OUTAGE_RECIPE},
                          presets={"tiny": {"studies": {"phew": {"recipe": "outage"}}}})
    cmd = [SNAKEMAKE, "--snakefile", str(REPO / "Snakefile"), "--directory", str(tmp_path), "--cores", "4",
           TARGETS[0], *config]
    env = {**os.environ, "SPARSENETS_TRACKING_URI": tracking_server.uri}
    with open(tmp_path / "snakemake.out", "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                start_new_session=True)  # its jobs in its group: a failing test stops them all
    try:
        deadline = time.monotonic() + 300
        while min(epochs_done(tmp_path).values()) < 1:  # every job trains (and has tracked an epoch)
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "snakemake.out").read_text()
            time.sleep(0.2)
        before = epochs_done(tmp_path)
        tracking_server.stop()
        time.sleep(OUTAGE_S)
        during = epochs_done(tmp_path)
        tracking_server.start()
        assert all(during[job] > before[job] for job in before), (before, during)  # training went on
        assert proc.wait(timeout=600) == 0, (tmp_path / "snakemake.out").read_text()[-5000:]
    finally:
        stop_group(proc.pid)
    check_runs(tracking_server.uri, tmp_path)  # one run per job, each epoch once (a duplicate shows twice)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_store_out_longer_than_the_limit_fails_the_job_naming_the_uri_and_the_limit(monkeypatch) -> None:
    monkeypatch.setenv(OUTAGE_ENV, "1.5")
    uri = f"http://127.0.0.1:{closed_port()}"
    t0 = time.monotonic()
    track = Tracking(uri, "phew", "digits/mlp/random/d0.2/s0")
    track("start", {}, {})
    with pytest.raises(TrackingOutage, match=rf"tracking store {uri} is out: no answer for 1.5 s, the outage limit "
                                             rf"\(config key tracking.outage_limit_s"):
        track.close("FINISHED")
    assert time.monotonic() - t0 < 100  # not MLflow's 4 minutes of HTTP retries (a bound for a loaded machine)
    with pytest.raises(TrackingOutage):  # later calls fail at once: the job stops instead of waiting again
        track("log_epoch", {"test_acc": 0.5}, step=1)


def test_a_bad_outage_limit_is_named(monkeypatch) -> None:
    monkeypatch.setenv(OUTAGE_ENV, "ten minutes")
    with pytest.raises(ValueError, match=rf"{OUTAGE_ENV} \(tracking.outage_limit_s\) must be a positive number.*'ten minutes'"):
        Tracking(f"http://127.0.0.1:{closed_port()}", "phew", "job")


def test_a_resent_epoch_whose_first_send_arrived_is_stored_once(tmp_path: Path) -> None:
    """Idempotence of a resend: the batch carries its own timestamp and step, so the store keeps one copy."""
    from mlflow.entities import Metric

    tracker = RunTracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "phew", "job")
    run_id = tracker.start({}, {})
    batch = [Metric("test_acc", 0.5, 1_700_000_000_000, 1)]
    for _ in range(2):  # the answer to the first send was lost: the worker sends it again
        tracker.client.log_batch(run_id, metrics=batch)
    tracker.finish()
    assert [(m.step, m.value) for m in tracker.client.get_metric_history(run_id, "test_acc")] == [(1, 0.5)]
