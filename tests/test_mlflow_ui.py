"""Runs that compare in the MLflow UI: parents per method, short names, the numbers the claims rest on,
datasets as inputs, system metrics, artifacts, a summary run per study, and durations that cover the epochs.

The unit tests train one tiny run against a SQLite store; the e2e tests query the store of the session's
tiny pipeline (conftest.tiny_run). The same checks against the PostgreSQL-backed server are in
tests/test_scale_out.py (check_hierarchy)."""
from __future__ import annotations

import json
import shutil
import sqlite3
import threading
from pathlib import Path

import pytest
import torch
import yaml

from conftest import REPO
from sparsenets import data
from sparsenets.experiments import make_mask, run_training
from sparsenets.study import TRAINING, Run, expand, format_density
from sparsenets.tracking import (ML_VIEW, NOTE, PARENT, PARENT_KEY, RunTracker, artifact_dir, init_store, parent_run,
                                 run_name, system_metrics)
from sparsenets.train import Recipe

CONFIG = yaml.safe_load((REPO / "config.yaml").read_text())
JOBS = expand(CONFIG, "tiny")
CLAIM_METRICS = {"actual_density", "final_test_acc", "best_test_acc", "init_path_kernel_trace", "path_kernel_trace",
                 "init_min_width_ratio", "min_width_ratio", "init_dead_units", "dead_units"}
ARTIFACTS = {"metrics.json", "structure.json", "mask.pt"}


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """An empty SQLite store, migrated once (seconds); tests copy it."""
    path = tmp_path_factory.mktemp("store") / "mlflow.db"
    init_store(f"sqlite:///{path}", [])
    return path


def copy_of(store: Path, tmp_path: Path) -> str:
    shutil.copy(store, tmp_path / "mlflow.db")
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def query(db: Path, sql: str, *args) -> list[tuple]:
    with sqlite3.connect(db) as con:
        return con.execute(sql, args).fetchall()


def tags_of(db: Path, run_id: str) -> dict[str, str]:
    return dict(query(db, "select key, value from tags where run_uuid = ?", run_id))


def job_runs(db: Path, experiment: str) -> dict[str, str]:
    """job path -> run id of every active training run of an experiment."""
    return dict(query(db, "select t.value, r.run_uuid from runs r join tags t on t.run_uuid = r.run_uuid and "
                          "t.key = 'job' join experiments e on e.experiment_id = r.experiment_id "
                          "where e.name = ? and r.lifecycle_stage = 'active'", experiment))


# ------------------------------------------------------------------------------------------------ unit
def test_run_names_start_with_what_differs():
    assert run_name("phew", format_density(0.01801), 0) == "phew d0.01801 s0"
    assert run_name("imp", "0.25", 1, "reinit") == "imp reinit d0.25 s1"
    assert run_name("snip", "0.05", 2, "original") == "snip d0.05 s2"


def test_jobs_racing_for_a_parent_settle_on_one(store, tmp_path):
    """Six jobs that find no parent (no mlflow_init) create theirs at once: one stays live, and the lookup
    each job repeats at its end (RunTracker.finish) gives every one of them that one."""
    from mlflow.tracking import MlflowClient

    uri = copy_of(store, tmp_path)
    exp = MlflowClient(uri).create_experiment("phew")
    found: list[str] = []
    barrier = threading.Barrier(6)

    def job() -> None:
        barrier.wait()
        found.append(parent_run(MlflowClient(uri), exp, "phew/digits/mlp/snip"))

    threads = [threading.Thread(target=job) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    live = query(tmp_path / "mlflow.db", "select r.run_uuid from runs r join tags t on t.run_uuid = r.run_uuid where "
                                         f"t.key = '{PARENT_KEY}' and r.lifecycle_stage = 'active'")
    assert len(found) == 6 and len(live) == 1
    assert {parent_run(MlflowClient(uri), exp, "phew/digits/mlp/snip") for _ in found} == {live[0][0]}


def test_jobs_logging_one_dataset_at_once_share_it(digits_npz, store, tmp_path):
    """Six runs log the same dataset file at once: no job fails on the race to insert it, and the store
    keeps one dataset (one per experiment, name and digest) that every run has as its input."""
    uri = copy_of(store, tmp_path)
    trackers = [RunTracker(uri, "phew", f"job{i}") for i in range(6)]
    for t in trackers:
        t.run_id = t.client.create_run(t.experiment_id).info.run_id
    barrier, errors = threading.Barrier(6), []

    def job(t: RunTracker) -> None:
        barrier.wait()
        try:
            t.log_dataset(digits_npz, "digits", {"train": 1, "test": 1})
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=job, args=(t,)) for t in trackers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(query(tmp_path / "mlflow.db", "select dataset_uuid from datasets")) == 1
    for t in trackers:
        assert [i.dataset.name for i in t.client.get_run(t.run_id).inputs.dataset_inputs] == ["digits"]


def test_a_training_run_reads_well_in_the_ui(digits_npz, store, tmp_path, monkeypatch):
    """Name, parent, description, the nominal density as a param, the claims' numbers as final metrics, the
    dataset as an input, system metrics, the three artifacts, provenance tags, and a duration that covers
    every epoch."""
    from mlflow.tracking import MlflowClient

    from sparsenets import provenance

    monkeypatch.setenv("SPARSENETS_PRESET", "tiny")  # as the workflow sets it
    uri = copy_of(store, tmp_path)
    init_store(uri, ["phew"], ["phew/digits/mlp/snip"])
    db = tmp_path / "mlflow.db"
    make_mask("mlp", digits_npz, "snip", 0.2, 0, tmp_path / "mask.pt")
    spec = Run("digits", "mlp", "snip", 0.2, 0, study="phew")
    result = run_training(spec, Recipe(epochs=2, batch_size=64, augment=False), data_file=digits_npz,
                          mask_file=tmp_path / "mask.pt", out_dir=tmp_path / "run", tracking_uri=uri, device="cpu",
                          log=lambda m: None)
    [run_id] = job_runs(db, "phew").values()
    tags = tags_of(db, run_id)
    [(parent, parent_name)] = query(db, "select r.run_uuid, r.name from runs r join tags t on t.run_uuid = r.run_uuid "
                                        f"where t.key = '{PARENT_KEY}' and t.value = 'phew/digits/mlp/snip'")
    assert tags["mlflow.runName"] == "snip d0.2 s0" and tags["job"] == spec.name
    assert tags[PARENT] == parent and parent_name == "snip digits/mlp"
    assert "snip" in tags[NOTE] and "density 0.2" in tags[NOTE] and "density" not in tags
    assert tags["git_commit"] == provenance.commit() and tags["git_dirty"] == str(tags["git_commit"].endswith(
        "-dirty")).lower() and tags["preset"] == "tiny"
    assert tags["data_file"] == digits_npz.name and tags["data_sha256"] == provenance.sha256(digits_npz)
    exp_tags = dict(query(db, "select t.key, t.value from experiment_tags t join experiments e using (experiment_id) "
                              "where e.name = 'phew'"))
    assert ML_VIEW.items() <= exp_tags.items() and exp_tags[NOTE]
    params = dict(query(db, "select key, value from params where run_uuid = ?", run_id))
    assert params["density"] == "0.2" and "mask_density" not in params

    metrics = dict(query(db, "select key, value from latest_metrics where run_uuid = ?", run_id))
    assert CLAIM_METRICS <= metrics.keys() and "density" not in metrics
    structure = json.loads((tmp_path / "run/structure.json").read_text())
    final = json.loads((tmp_path / "run/metrics.json").read_text())
    assert metrics["actual_density"] == pytest.approx(final["density"])
    assert metrics["init_path_kernel_trace"] == pytest.approx(structure["init"]["path_kernel_trace"])
    assert metrics["dead_units"] == structure["summary"]["dead"]
    assert any(k.startswith("system/cpu_utilization") for k in metrics)  # a 2-second run still gets its sample

    [dataset] = MlflowClient(uri).get_run(run_id).inputs.dataset_inputs
    assert dataset.dataset.name == "digits" and len(dataset.dataset.digest) == 16
    assert [(t.key, t.value) for t in dataset.tags] == [("mlflow.data.context", "training")]
    ds = data.load(digits_npz)
    sizes = {"train": len(ds.y_train), "test": len(ds.y_test)}
    assert json.loads(dataset.dataset.profile) == sizes and sizes.items() <= json.loads(dataset.dataset.source).items()

    [(artifact_uri,)] = query(db, "select artifact_uri from runs where run_uuid = ?", run_id)
    artifacts = artifact_dir(uri, artifact_uri)
    assert {p.name for p in artifacts.iterdir()} == ARTIFACTS

    [(start, end)] = query(db, "select start_time, end_time from runs where run_uuid = ?", run_id)
    stamps = [t for (t,) in query(db, "select timestamp from metrics where run_uuid = ? and key = 'test_acc'", run_id)]
    assert len(stamps) == len(result.history) and start <= min(stamps) <= max(stamps) <= end
    assert (end - start) / 1000 >= sum(row["seconds"] for row in result.history)


def test_a_resumed_run_still_covers_every_epoch(digits_npz, store, tmp_path):
    """Killed after epoch 2 and resumed: one run, started before epoch 1 and ended after the last epoch."""
    class Killed(BaseException):
        pass

    def die_after_epoch_2(msg: str) -> None:
        if msg.startswith("epoch   2/"):
            raise Killed

    uri = copy_of(store, tmp_path)
    make_mask("mlp", digits_npz, "random", 0.2, 0, tmp_path / "mask.pt")
    spec = Run("digits", "mlp", "random", 0.2, 0, study="phew")
    kw = dict(data_file=digits_npz, mask_file=tmp_path / "mask.pt", out_dir=tmp_path / "run", device="cpu",
              tracking_uri=uri)
    recipe = Recipe(epochs=3, batch_size=64, augment=False)
    with pytest.raises(Killed):
        run_training(spec, recipe, log=die_after_epoch_2, **kw)
    run_training(spec, recipe, log=lambda m: None, **kw)
    db = tmp_path / "mlflow.db"
    [run_id] = job_runs(db, "phew").values()
    [(start, end, status)] = query(db, "select start_time, end_time, status from runs where run_uuid = ?", run_id)
    stamps = [t for (t,) in query(db, "select timestamp from metrics where run_uuid = ? and key = 'test_acc'", run_id)]
    assert status == "FINISHED" and len(stamps) == 3 and start <= min(stamps) <= max(stamps) <= end
    parents = query(db, f"select run_uuid from runs r join tags t using (run_uuid) where t.key = '{PARENT_KEY}'")
    assert [(tags_of(db, run_id)[PARENT],)] == parents  # created by the job itself (no mlflow_init), once


def test_a_rerun_replaces_its_run_under_the_same_parent(digits_npz, store, tmp_path):
    """A job run again from scratch: still one run for it, nested under the one parent mlflow_init made."""
    uri = copy_of(store, tmp_path)
    init_store(uri, ["phew"], ["phew/digits/mlp/random"])
    make_mask("mlp", digits_npz, "random", 0.2, 0, tmp_path / "mask.pt")
    spec = Run("digits", "mlp", "random", 0.2, 0, study="phew")
    db, ids = tmp_path / "mlflow.db", []
    for out in ("a", "b"):
        run_training(spec, Recipe(epochs=1, batch_size=64, augment=False), data_file=digits_npz,
                     mask_file=tmp_path / "mask.pt", out_dir=tmp_path / out, tracking_uri=uri, device="cpu",
                     log=lambda m: None)
        ids.append(job_runs(db, "phew"))
    [parent] = query(db, f"select run_uuid from tags where key = '{PARENT_KEY}'")
    assert len(ids[1]) == 1 and ids[0] != ids[1] and tags_of(db, ids[1][spec.name])[PARENT] == parent[0]


# ------------------------------------------------------------------------------------------------ e2e
@pytest.mark.e2e
@pytest.mark.parametrize("study", ["phew", "deconstructing"])
def test_every_training_run_is_nested_under_its_methods_parent(tiny_run, study):
    db = tiny_run / "results" / "mlflow.db"
    runs = job_runs(db, study)
    expected = {j.run.name: j for j in JOBS if j.kind in TRAINING and j.study == study}
    assert sorted(runs) == sorted(expected)
    parents = dict(query(db, "select t.value, r.run_uuid from runs r join tags t on t.run_uuid = r.run_uuid "
                             f"where t.key = '{PARENT_KEY}' and r.lifecycle_stage = 'active'"))
    keys = {f"{study}/{j.run.dataset}/{j.run.model}/{j.run.method}" for j in expected.values()}
    assert keys <= parents.keys()  # one live parent per method (a dict: duplicates would show as missing ids)
    assert len(query(db, f"select run_uuid from tags where key = '{PARENT_KEY}'")) == len(parents)  # none deleted
    for job, run_id in runs.items():
        run, tags = expected[job].run, tags_of(db, run_id)
        assert tags[PARENT] == parents[f"{study}/{run.dataset}/{run.model}/{run.method}"], job
        assert tags["mlflow.runName"] == run_name(run.method, run.density, run.seed, run.variant), job
        assert tags[NOTE], job


@pytest.mark.e2e
def test_runs_carry_density_claims_numbers_inputs_and_artifacts(tiny_run):
    from mlflow.tracking import MlflowClient

    db = tiny_run / "results" / "mlflow.db"
    client = MlflowClient(f"sqlite:///{db}")
    for job, run_id in {**job_runs(db, "phew"), **job_runs(db, "deconstructing")}.items():
        run = next(j.run for j in JOBS if j.kind in TRAINING and j.run.name == job)
        params = dict(query(db, "select key, value from params where run_uuid = ?", run_id))
        assert params["density"] == run.density, job
        assert CLAIM_METRICS <= {k for (k,) in query(db, "select key from latest_metrics where run_uuid = ?", run_id)}
        inputs = client.get_run(run_id).inputs.dataset_inputs
        assert [i.dataset.name for i in inputs] == ["digits"], job
        uri = query(db, "select artifact_uri from runs where run_uuid = ?", run_id)[0][0]
        assert {p.name for p in artifact_dir(f"sqlite:///{db}", uri).iterdir()} == ARTIFACTS, job
    for curve in [j for j in JOBS if j.kind == "sensitivity"]:  # C5's and C5b's areas, onto the curve's run
        run_id = job_runs(db, curve.study)[curve.run.name]
        areas = dict(query(db, "select key, value from latest_metrics where run_uuid = ? and key like "
                               "'sensitivity_area_%'", run_id))
        assert areas.keys() == {"sensitivity_area_magnitude", "sensitivity_area_random"}, curve.name


@pytest.mark.e2e
def test_runs_filter_by_method_and_density_as_the_readme_says(tiny_run):
    """The README's filters, through MLflow's own search (3.17 refuses `tags.method IN (...)`)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tiny_run / 'results' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("phew").experiment_id
    others = [m for m in CONFIG["presets"]["tiny"]["studies"]["phew"]["methods"] if m not in ("phew", "synflow")]
    two = "params.density = '0.05' AND tags.variant = 'original' AND " + " AND ".join(
        f"tags.method != '{m}'" for m in others)
    runs = client.search_runs([exp], two)
    assert sorted(r.info.run_name for r in runs) == ["phew d0.05 s0", "synflow d0.05 s0"]
    sparse = client.search_runs([exp], "metrics.actual_density < 0.1 and tags.method = 'phew'")
    assert [r.info.run_name for r in sparse] == ["phew d0.05 s0"]


@pytest.mark.e2e
@pytest.mark.parametrize("study", ["phew", "deconstructing"])
def test_each_study_has_one_summary_run_with_its_figures_and_claims(tiny_run, study):
    db = tiny_run / "results" / "mlflow.db"
    [(run_id, name, uri)] = query(db, "select r.run_uuid, r.name, r.artifact_uri from runs r join tags t on "
                                      "t.run_uuid = r.run_uuid where t.key = 'summary' and t.value = ? and "
                                      "r.lifecycle_stage = 'active'", study)
    root = artifact_dir(f"sqlite:///{db}", uri)
    figures = {j.key.split("/", 1)[1] for j in JOBS if j.kind == "figure" and j.study == study}
    assert {p.name for p in (root / "figures").iterdir()} == {f"{f}.{e}" for f in figures for e in ("png", "pdf")}
    assert (root / "claims.md").read_text() == (tiny_run / "results/claims.md").read_text()
    assert name == "summary" and f"| {study} |" in tags_of(db, run_id)[NOTE]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_system_metrics_sample_the_jobs_gpu(store, tmp_path):
    """On a GPU: MLflow's GPU monitor (with nvidia-ml-py) or this job's CUDA memory (without it)."""
    from mlflow.tracking import MlflowClient

    uri = copy_of(store, tmp_path)
    client = MlflowClient(uri)
    run_id = client.create_run(client.create_experiment("gpu")).info.run_id
    held = torch.ones(1 << 22, device="cuda")  # 16 MB
    monitor = system_metrics(run_id, uri, "cuda:0")
    monitor.start()
    monitor.finish()
    metrics = client.get_run(run_id).data.metrics
    assert metrics.get("system/gpu_0_memory_allocated_megabytes", 0) >= 16 or "system/gpu_0_memory_usage_megabytes" \
        in metrics, sorted(metrics)
    del held
