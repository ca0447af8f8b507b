"""Reliability: faults provoked for real, and what the pipeline guarantees after each.

A training job killed mid-run resumes from its checkpoint into its own MLflow run and ends with the
numbers of an uninterrupted run; a rerun does nothing; seeds fix every mask and metric; bad input,
NaN losses and dead tracking stores fail fast, name the key, file or URI, leave no partial file and
never print a password.
"""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import sqlite3
import shutil
import subprocess
import time
from pathlib import Path
from typing import Callable

import pytest
import torch
import yaml
from torch.func import functional_call

from conftest import PY, REPO
from sparsenets import pruning
from sparsenets.experiments import derive_seeds, make_mask, run_training
from sparsenets.study import Run
from sparsenets.masks import Mask, keep_count, prunable
from sparsenets.models import build_model
from sparsenets.pruning import PruneInputs, build_mask
from sparsenets.tracking import init_store
from sparsenets.train import Recipe, seeded_generator
from conftest import SNAKEMAKE, snakemake

# ------------------------------------------------------------------ a one-run slice of the DAG
RECIPE = {"epochs": 8, "batch_size": 64, "lr": 0.05, "milestones": [4], "augment": False}  # ~0.2 s per epoch
RUN = "results/phew/runs/synthetic/mlp/phew/d{}/s0"
LOG = "results/logs/phew/runs/synthetic/mlp/phew/d{}/s0.log"
OUTPUTS = ("metrics.json", "model.pt", "mask.pt", "structure.json")
SQLITE_STORE = {"SPARSENETS_TRACKING_URI": ""}  # the default store, results/mlflow.db, whatever the caller set


def configure(work: Path, name: str = "rel.yaml", **study: object) -> Path:
    """A config file over config.yaml: preset `rel`, one phew study of one method, density and seed."""
    spec = {"protocol": "phew", "datasets": ["synthetic"], "models": ["mlp"], "methods": ["phew"], "densities": [0.1],
            "seeds": [0], "recipe": "rel", **study}
    cfg = {"preset": "rel", "recipes": {"rel": RECIPE}, "presets": {"rel": {"studies": {"phew": spec}}}}
    work.mkdir(parents=True, exist_ok=True)
    (work / name).write_text(yaml.safe_dump(cfg))
    return work


def config_args(work: Path, name: str = "rel.yaml") -> list[str]:
    return ["--configfile", str(REPO / "config.yaml"), str(work / name)]  # later files override earlier ones


def smk(work: Path, *args: str, name: str = "rel.yaml", **kw) -> subprocess.CompletedProcess:
    return snakemake(work, *config_args(work, name), *args, configfile=False, **kw)


def start(work: Path, target: str) -> subprocess.Popen:
    """Snakemake in the background, its output in `work`/snakemake.out."""
    cmd = [SNAKEMAKE, "--snakefile", str(REPO / "Snakefile"), *config_args(work), "--directory", str(work),
           "--cores", "2", target]
    with open(work / "snakemake.out", "w") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env={**os.environ, **SQLITE_STORE})


def descendants(root: int) -> list[int]:
    """Every process below `root`, from the parent pids in /proc."""
    parent = {}
    for d in Path("/proc").iterdir():
        try:
            parent[int(d.name)] = int((d / "stat").read_text().rpartition(")")[2].split()[1])
        except (ValueError, OSError):
            continue
    found, level = [], [root]
    while level:
        level = [p for p, pp in parent.items() if pp in level]
        found += level
    return found


def kill_training(proc: subprocess.Popen, checkpoint: Path, timeout: float = 900) -> None:
    """SIGKILL the `python -m sparsenets train` under `proc` once it has checkpointed an epoch."""
    deadline = time.monotonic() + timeout
    while not checkpoint.exists():
        assert proc.poll() is None and time.monotonic() < deadline, "training ended before its first checkpoint"
        time.sleep(0.05)
    for pid in descendants(proc.pid):
        if b"-m\0sparsenets\0train\0" in Path(f"/proc/{pid}/cmdline").read_bytes():
            os.kill(pid, signal.SIGKILL)
            return
    raise AssertionError("no training process under snakemake")


def active_runs(db: Path) -> list[tuple[str, str, str]]:
    """(run id, job, status) of every active job's run in a SQLite store, by its `job` tag (the job's path;
    the run's name is short; parent and summary runs have no `job` tag)."""
    with sqlite3.connect(db) as con:
        return con.execute("select r.run_uuid, t.value, r.status from runs r join tags t on t.run_uuid = r.run_uuid "
                           "and t.key = 'job' where r.lifecycle_stage = 'active'").fetchall()


def acc_history(db: Path, run_id: str) -> list[tuple[int, float]]:
    """(epoch, test accuracy) as logged, every row of the store (a step logged twice shows twice)."""
    with sqlite3.connect(db) as con:
        return con.execute("select step, value from metrics where run_uuid = ? and key = 'test_acc' order by step",
                           (run_id,)).fetchall()


def store(work: Path) -> Path:
    return work / "results" / "mlflow.db"


def without_seconds(metrics: dict) -> dict:
    return {**metrics, "history": [{k: v for k, v in row.items() if k != "seconds"} for row in metrics["history"]]}


@pytest.fixture(scope="module")
def killed_and_reference(tmp_path_factory) -> dict:
    """One job killed mid-training then rerun; beside it, the same job uninterrupted (with a second
    density, for the rerun tests). Both pipelines run at once."""
    killed = configure(tmp_path_factory.mktemp("killed"))
    reference = configure(tmp_path_factory.mktemp("reference"), densities=[0.1, 0.2])
    run = killed / RUN.format(0.1)
    ref = start(reference, "results/phew/tables/runs.csv")
    first = start(killed, f"{RUN.format(0.1)}/metrics.json")
    try:
        kill_training(first, run / "checkpoint.pt")
        first.wait(timeout=300)
        after_kill = {"returncode": first.returncode, "files": sorted(p.name for p in run.iterdir()),
                      "runs": active_runs(store(killed))}
        smk(killed, "--cores", "1", f"{RUN.format(0.1)}/metrics.json", env=SQLITE_STORE)
        assert ref.wait(timeout=1500) == 0, (reference / "snakemake.out").read_text()[-3000:]
    finally:
        for proc in (first, ref):
            proc.kill()  # only if a step above failed: both have ended otherwise
    return {"killed": killed, "reference": reference, "after_kill": after_kill}


@pytest.mark.e2e
def test_killed_training_job_resumes_from_its_last_checkpoint(killed_and_reference):
    after_kill, run = killed_and_reference["after_kill"], killed_and_reference["killed"] / RUN.format(0.1)
    assert after_kill["returncode"] != 0
    # snakemake removed nothing it did not declare: the last checkpoint and (after epoch 2) the one before
    assert after_kill["files"] in (["checkpoint.pt"], ["checkpoint.pt", "checkpoint.prev.pt"])
    log = (killed_and_reference["killed"] / LOG.format(0.1)).read_text()  # the resumed job's
    resumed = re.search(r"resuming from \S+checkpoint\.pt after epoch (\d+)", log)
    assert resumed and 1 <= int(resumed[1]) < RECIPE["epochs"], log
    assert f"epoch   1/{RECIPE['epochs']}" not in log  # the epochs before the kill were not trained again
    assert sorted(p.name for p in run.iterdir()) == sorted(OUTPUTS)


@pytest.mark.e2e
def test_resumed_run_ends_with_the_numbers_of_an_uninterrupted_one(killed_and_reference):
    resumed, uninterrupted = (json.loads((killed_and_reference[k] / RUN.format(0.1) / "metrics.json").read_text())
                              for k in ("killed", "reference"))
    assert len(resumed["history"]) == RECIPE["epochs"]
    assert without_seconds(resumed) == without_seconds(uninterrupted)


@pytest.mark.e2e
def test_resumed_job_continues_its_own_mlflow_run(killed_and_reference):
    killed, reference = killed_and_reference["killed"], killed_and_reference["reference"]
    [(run_id, name, status)] = active_runs(store(killed))
    [(killed_id, _, killed_status)] = killed_and_reference["after_kill"]["runs"]
    assert (run_id, name, status, killed_status) == (killed_id, "synthetic/mlp/phew/d0.1/s0", "FINISHED", "RUNNING")
    history = acc_history(store(killed), run_id)
    assert [step for step, _ in history] == list(range(1, RECIPE["epochs"] + 1))  # each epoch exactly once
    metrics = json.loads((killed / RUN.format(0.1) / "metrics.json").read_text())
    assert [value for _, value in history] == [row["test_acc"] for row in metrics["history"]]
    [ref_id] = [r for r, n, _ in active_runs(store(reference)) if n == name]
    assert history == acc_history(store(reference), ref_id)


@pytest.mark.e2e
def test_rerun_runs_nothing_and_leaves_every_file_and_the_store_unchanged(killed_and_reference):
    work = killed_and_reference["reference"]
    files = {p: p.stat().st_mtime_ns for p in (work / "results").rglob("*") if p.is_file()}
    with sqlite3.connect(store(work)) as con:
        before = list(con.iterdump())
    proc = smk(work, "--cores", "1", "results/phew/tables/runs.csv", env=SQLITE_STORE)
    assert "Nothing to be done" in proc.stdout + proc.stderr
    assert {p: p.stat().st_mtime_ns for p in (work / "results").rglob("*") if p.is_file()} == files
    with sqlite3.connect(store(work)) as con:
        assert list(con.iterdump()) == before


@pytest.mark.e2e
def test_a_damaged_run_file_fails_its_reader_and_deleting_it_reruns_its_producer(killed_and_reference, tmp_path):
    """A run's metrics.json cut short: the table job that reads it fails naming the file, its rule and the fix;
    doing what the message says (delete it, rerun) retrains that run and ends with the same numbers."""
    work = tmp_path / "work"
    shutil.copytree(killed_and_reference["reference"], work, symlinks=True)
    metrics = work / RUN.format(0.1) / "metrics.json"
    good = json.loads(metrics.read_text())
    metrics.write_text(metrics.read_text()[:100])
    proc = smk(work, "--cores", "1", "results/phew/tables/runs.csv", check=False, env=SQLITE_STORE)
    assert proc.returncode != 0 and "Error in rule table" in proc.stdout + proc.stderr
    log = (work / "results/logs/phew/tables/runs.log").read_text()
    assert (f"error: run file {RUN.format(0.1)}/metrics.json is damaged" in log
            and "it is written by rule train: delete it and run snakemake again" in log and "Traceback" not in log), log
    metrics.unlink()
    proc = smk(work, "--cores", "1", "results/phew/tables/runs.csv", env=SQLITE_STORE)
    out = proc.stdout + proc.stderr  # a real run reports its job stats on stderr
    stats = dict(re.findall(r"^(\w+)\s+(\d+)$", out.split("Job stats:")[1].split("\n\n")[0], re.M))
    assert stats == {"train": "1", "table": "1", "total": "2"}, out[-3000:]
    assert without_seconds(json.loads(metrics.read_text())) == without_seconds(good)


@pytest.mark.e2e
def test_changing_one_density_reruns_only_the_jobs_that_depend_on_it(killed_and_reference):
    work = configure(killed_and_reference["reference"], "changed.yaml", densities=[0.1, 0.3])
    proc = smk(work, "-n", "results/phew/tables/runs.csv", name="changed.yaml", env=SQLITE_STORE)
    stats = proc.stdout.split("Job stats:")[1].split("\n\n")[0]
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", stats, re.M))
    assert counts == {"mask": "1", "train": "1", "table": "1", "total": "3"}, proc.stdout
    outputs = re.findall(r"^\s+output: (.*)$", proc.stdout, re.M)
    assert all("/d0.1/" not in o for o in outputs) and sum("/d0.3/" in o for o in outputs) == 2, outputs


# ------------------------------------------------------------------------------ determinism
pruning.load_all()
METHODS = sorted(pruning.METHODS)
FAST = {"synflow": {"iterations": 10}, "synflow-l2": {"iterations": 10}}


@pytest.fixture(scope="module")
def mask_files(digits_npz, tmp_path_factory) -> dict[str, dict[str, Mask]]:
    """Every registered method's mask, built through the job entry point: seed 0 twice, seed 1 once."""
    out = tmp_path_factory.mktemp("masks")
    make_mask("mlp", digits_npz, "random-erk", 0.1, 7, out / "like.pt", device="cpu")
    options = {**FAST, "random-like": {"like": str(out / "like.pt")}}
    built = {}
    for method in METHODS:
        for name, seed in (("a", 0), ("b", 0), ("other", 1)):
            path = out / f"{method}-{name}.pt"
            make_mask("mlp", digits_npz, method, 0.1, seed, path, options=options.get(method), device="cpu")
            built.setdefault(method, {})[name] = Mask.load(path)
    return built


def same(a: Mask, b: Mask) -> bool:
    return list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("method", METHODS)
def test_same_seed_gives_a_bit_identical_mask_file(mask_files, method):
    a, b = mask_files[method]["a"], mask_files[method]["b"]
    assert same(a, b) and a.meta == b.meta


@pytest.mark.parametrize("method", METHODS)
def test_another_seed_gives_another_mask(mask_files, method):
    """Random and data-driven methods draw from the mask seed; the others score the seed's init."""
    assert not same(mask_files[method]["a"], mask_files[method]["other"])


@pytest.fixture(scope="module")
def migrated_store(tmp_path_factory) -> Path:
    """An empty SQLite store, migrated once (that takes seconds); tests use copies."""
    path = tmp_path_factory.mktemp("store") / "mlflow.db"
    init_store(f"sqlite:///{path}", [])
    return path


@pytest.fixture
def new_store(migrated_store, tmp_path) -> Callable[[str], str]:
    """A fresh store in tmp_path, by file name; returns its URI."""
    def copy(name: str) -> str:
        shutil.copy(migrated_store, tmp_path / name)
        return f"sqlite:///{tmp_path / name}"

    return copy


def test_same_seed_same_metrics_one_mlflow_run_and_its_three_seeds_recorded(digits_npz, tmp_path, new_store):
    make_mask("mlp", digits_npz, "random", 0.2, 0, tmp_path / "mask.pt")
    spec, uri = Run("digits", "mlp", "random", 0.2, 0, study="phew"), new_store("mlflow.db")
    recipe = Recipe(epochs=2, batch_size=64, augment=False)
    for out in ("a", "b"):
        run_training(spec, recipe, data_file=digits_npz, mask_file=tmp_path / "mask.pt", out_dir=tmp_path / out,
                     tracking_uri=uri, device="cpu", log=lambda m: None)
    a, b = (json.loads((tmp_path / out / "metrics.json").read_text()) for out in ("a", "b"))
    assert without_seconds(a) == without_seconds(b)
    [(run_id, _, _)] = active_runs(tmp_path / "mlflow.db")  # the second run replaced the first
    with sqlite3.connect(tmp_path / "mlflow.db") as con:
        params = dict(con.execute("select key, value from params where run_uuid = ?", (run_id,)).fetchall())
    seeds = {k: params[k] for k in ("weight_seed", "mask_seed", "data_seed")}
    assert seeds == {k: str(v) for k, v in derive_seeds(0).items() if k in seeds} and len(set(seeds.values())) == 3


class Killed(BaseException):
    """A job killed in the middle of a run (not an Exception: nothing in the job may catch it)."""


def die_after_epoch(n: int):
    """A log function that kills the run once epoch `n` is logged, i.e. once its checkpoint is on disk."""
    def log(msg: str) -> None:
        if msg.startswith(f"epoch {n:>3}/"):
            raise Killed
    return log


def test_a_run_resumed_against_another_store_logs_every_epoch(digits_npz, tmp_path, new_store):
    """Killed after epoch 2, then resumed with another tracking URI: the new run gets epochs 1 and 2 too."""
    make_mask("mlp", digits_npz, "random", 0.2, 0, tmp_path / "mask.pt")
    spec, recipe = Run("digits", "mlp", "random", 0.2, 0, study="phew"), Recipe(epochs=4, batch_size=64, augment=False)
    kw = dict(data_file=digits_npz, mask_file=tmp_path / "mask.pt", out_dir=tmp_path / "run", device="cpu")
    with pytest.raises(Killed):
        run_training(spec, recipe, tracking_uri=new_store("old.db"), log=die_after_epoch(2), **kw)
    result = run_training(spec, recipe, tracking_uri=new_store("new.db"), log=lambda m: None, **kw)
    assert result.resumed_from == 2
    [(old_id, _, old_status)] = active_runs(tmp_path / "old.db")
    [(new_id, _, new_status)] = active_runs(tmp_path / "new.db")
    assert (old_status, new_status) == ("FAILED", "FINISHED")
    assert acc_history(tmp_path / "new.db", new_id) == [(row["epoch"], row["test_acc"]) for row in result.history]


@pytest.mark.parametrize("damage", ["last", "both"])
def test_a_damaged_checkpoint_is_set_aside_and_the_run_ends_as_an_uninterrupted_one(digits_npz, tmp_path, new_store,
                                                                                    damage):
    """Killed after epoch 3, then its checkpoint (and, for "both", the one before) cut to 1,000 bytes: the
    rerun moves each aside, names it in its log and on its MLflow run, goes on from the previous checkpoint
    (epoch 2) or from scratch, and ends with the numbers of an uninterrupted run. No manual step."""
    make_mask("mlp", digits_npz, "random", 0.2, 0, tmp_path / "mask.pt")
    spec, recipe = Run("digits", "mlp", "random", 0.2, 0, study="phew"), Recipe(epochs=5, batch_size=64, augment=False)
    kw = dict(data_file=digits_npz, mask_file=tmp_path / "mask.pt", device="cpu")
    run_training(spec, recipe, out_dir=tmp_path / "reference", tracking_uri=None, log=lambda m: None, **kw)
    uri, run = new_store("mlflow.db"), tmp_path / "run"
    with pytest.raises(Killed):
        run_training(spec, recipe, out_dir=run, tracking_uri=uri, log=die_after_epoch(3), **kw)
    cut = [run / "checkpoint.pt"] + ([run / "checkpoint.prev.pt"] if damage == "both" else [])
    for f in cut:
        f.write_bytes(f.read_bytes()[:1000])
    lines: list[str] = []
    result = run_training(spec, recipe, out_dir=run, tracking_uri=uri, log=lines.append, **kw)
    log = "\n".join(lines)
    for f in cut:
        assert f"damaged checkpoint {f} (" in log and f"moved it aside to {f}.damaged" in log, log
    assert result.resumed_from == (2 if damage == "last" else 0)
    if damage == "last":
        assert re.search(r"resuming from \S+checkpoint\.prev\.pt after epoch 2", log), log
    resumed, uninterrupted = (json.loads((d / "metrics.json").read_text()) for d in (run, tmp_path / "reference"))
    assert without_seconds(resumed) == without_seconds(uninterrupted)
    assert sorted(p.name for p in run.iterdir()) == sorted([*OUTPUTS, *(f"{f.name}.damaged" for f in cut)])
    [(run_id, _, status)] = active_runs(tmp_path / "mlflow.db")
    with sqlite3.connect(tmp_path / "mlflow.db") as con:
        [(tag,)] = con.execute("select value from tags where run_uuid = ? and key = 'damaged_checkpoint'",
                               (run_id,)).fetchall()
    assert status == "FINISHED" and tag == ", ".join(f"{f}.damaged" for f in cut)


# ------------------------------------------------------------------ bad input, clear errors
def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-m", "sparsenets", *args], capture_output=True, text=True, timeout=600,
                          stdin=subprocess.DEVNULL)


def run_args(data_file: Path, model: str = "mlp") -> list[str]:
    return ["--dataset", "digits", "--data", str(data_file), "--model", model, "--method", "random",
            "--density", "0.2", "--seed", "0", "--device", "cpu"]


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


@pytest.fixture
def truncated_npz(digits_npz, tmp_path) -> Path:
    path = tmp_path / "digits.npz"
    path.write_bytes(digits_npz.read_bytes()[:5000])
    return path


@pytest.mark.parametrize("command", ["mask", "train"])
def test_truncated_dataset_fails_naming_the_file_and_writes_nothing(command, truncated_npz, digits_npz, tmp_path):
    out = tmp_path / "out"
    if command == "mask":
        proc = cli("mask", *run_args(truncated_npz), "--out", str(out / "mask.pt"))
    else:
        make_mask("mlp", digits_npz, "random", 0.2, 0, tmp_path / "mask.pt")
        proc = cli("train", "--study", "phew", *run_args(truncated_npz), "--mask", str(tmp_path / "mask.pt"),
                   "--out-dir", str(out))
    assert proc.returncode == 1
    assert f"error: dataset file {truncated_npz} is not a readable npz" in proc.stderr
    assert files_under(out) == []


def test_mask_of_another_model_fails_naming_both_models_and_the_file(digits_npz, tmp_path):
    make_mask("mlp", digits_npz, "random", 0.2, 0, tmp_path / "mask.pt")
    proc = cli("train", "--study", "phew", *run_args(digits_npz, model="convnet"), "--mask",
               str(tmp_path / "mask.pt"), "--out-dir", str(tmp_path / "run"))
    assert proc.returncode == 1
    assert f"error: mask file {tmp_path / 'mask.pt'} was built for mlp and does not fit convnet" in proc.stderr
    assert files_under(tmp_path / "run") == []


@pytest.mark.e2e
@pytest.mark.parametrize("study, named", [
    ({"methods": ["phew", "phwe"]}, r"studies\.phew\.methods': unknown method 'phwe'"),
    ({"models": ["mlp", "resnet21"]}, r"studies\.phew\.models': unknown model 'resnet21'"),
    ({"datasets": ["cifar11"]}, r"studies\.phew\.datasets': unknown dataset 'cifar11'"),
    ({"densities": [0.1, 1.5]}, r"config key 'presets\.rel\.studies\.phew\.densities\.1': 1\.5 is greater than the "
                                r"maximum of 1"),
    ({"densities": [0.0]}, r"studies\.phew\.densities\.0': 0\.0 is less than or equal to the minimum of 0"),
    ({"seeds": []}, r"studies\.phew\.seeds': \[\] should be non-empty"),
    ({"methods": "phew"}, r"studies\.phew\.methods': 'phew' is a str, not array"),
    ({"method": ["phew"]}, r"config key 'presets\.rel\.studies\.phew\.method' is not a known key; allowed keys in "
                           r"presets\.rel\.studies\.phew: .*methods"),
    ({"layer_policy": "uniform"}, r"layer_policy': 'uniform' is not allowed; allowed values: global, "
                                  r"first-layer-dense"),
    ({"recipe": "quik"}, r"studies\.phew\.recipe': 'quik' is not a recipe"),
])  # an unknown preset: test_workflow.py::test_bad_config_fails_before_any_job_naming_the_key
def test_bad_config_fails_before_any_job_naming_the_key_and_value(tmp_path, study, named):
    proc = smk(configure(tmp_path, **study), "--cores", "1", check=False)
    assert proc.returncode != 0
    assert re.search(named, proc.stdout + proc.stderr), proc.stderr[-3000:]
    assert len((proc.stdout + proc.stderr).splitlines()) < 10  # the key and value, not the schema
    assert not (tmp_path / "results").exists() and not (tmp_path / "data").exists()


@pytest.mark.e2e
def test_truncated_dataset_in_the_pipeline_fails_its_job_with_the_file_named_in_the_log(tmp_path, truncated_npz):
    work = configure(tmp_path / "work")
    (work / "data").mkdir()
    (work / "data" / "synthetic.npz").write_bytes(truncated_npz.read_bytes())  # a user's broken copy
    mask = "results/phew/masks/synthetic/mlp/phew/d0.1/s0.pt"
    proc = smk(work, "--profile", str(REPO / "workflow/profiles/local"), "--cores", "1", mask, check=False)
    assert proc.returncode != 0 and "Error in rule mask" in proc.stdout + proc.stderr
    log = (work / "results/logs/phew/masks/synthetic/mlp/phew/d0.1/s0.log").read_text()
    assert "error: dataset file data/synthetic.npz is not a readable npz" in log
    # the local profile's show-failed-logs: the user sees the job's error where snakemake runs, no trace
    assert "error: dataset file data/synthetic.npz is not a readable npz" in proc.stdout + proc.stderr
    assert "Traceback" not in log
    assert [p.name for p in files_under(work / "results") if p.suffix != ".log"] == []


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.e2e
@pytest.mark.parametrize("uri", ["http://127.0.0.1:{port}", "postgresql://sparse:s3cret-pw@127.0.0.1:{port}/db"])
def test_unreachable_tracking_store_fails_fast_naming_it_without_its_password(tmp_path, uri):
    """MLflow alone retries for minutes (4 min over HTTP, 2 min for PostgreSQL); the whole DAG waits."""
    uri = uri.format(port=closed_port())
    t0 = time.monotonic()
    proc = smk(configure(tmp_path), "--cores", "1", "results/.tracking-ready.json", check=False,
               env={"SPARSENETS_TRACKING_URI": uri})
    assert time.monotonic() - t0 < 100  # not MLflow's 2 to 4 minutes of retries (a bound, not a benchmark)
    assert proc.returncode != 0
    log = (tmp_path / "results/logs/mlflow_init.log").read_text()
    assert f"error: cannot reach the MLflow tracking store {uri.replace('s3cret-pw', '***')}" in log
    assert "s3cret-pw" not in log + proc.stdout + proc.stderr
    assert not (tmp_path / "results/.tracking-ready.json").exists()


# ------------------------------------------------------------------------- numerical faults
def test_nan_loss_is_a_recorded_diverged_run_with_the_last_good_weights(digits_npz, tmp_path, new_store):
    """A diverged run (an unnormalised net at lr 0.1 may) is a result, not a crashed workflow: the job
    succeeds, metrics.json says diverged with no accuracy, model.pt holds the last good (finite) weights,
    and its MLflow run is FAILED with the good epochs logged. (Until issue 13 the job itself failed.)"""
    make_mask("mlp", digits_npz, "random", 0.2, 0, tmp_path / "mask.pt")
    recipe = {"epochs": 3, "batch_size": 64, "lr": 0.05, "milestones": [1], "gamma": 1e8, "augment": False}
    run, db = tmp_path / "run", tmp_path / "mlflow.db"  # epoch 2 trains at lr 5e6
    proc = cli("train", "--study", "phew", *run_args(digits_npz), "--mask", str(tmp_path / "mask.pt"),
               "--recipe", json.dumps(recipe), "--out-dir", str(run), "--tracking-uri", new_store(db.name))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert re.search(r"diverged: training loss is (nan|inf) in epoch 2; the last good checkpoint \(epoch 1\) is kept",
                     proc.stdout + proc.stderr), proc.stdout[-2000:]
    assert [p.name for p in files_under(run)] == ["mask.pt", "metrics.json", "model.pt", "structure.json"]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["diverged"] is True and "in epoch 2" in metrics["error"]
    assert metrics["final_test_acc"] is None and metrics["best_test_acc"] is None
    assert [row["epoch"] for row in metrics["history"]] == [1]
    state = torch.load(run / "model.pt", weights_only=True)
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
    [(run_id, _, status)] = active_runs(db)
    assert status == "FAILED"
    assert [step for step, _ in acc_history(db, run_id)] == [1]


def test_a_diverged_run_is_a_row_marked_diverged_and_counted_under_the_accuracy_figure(tmp_path):
    from sparsenets.figures import FIGURES
    from sparsenets.tables import runs_table

    files = []
    for seed, diverged in ((0, False), (1, True)):
        run = tmp_path / f"s{seed}"
        run.mkdir()
        metrics = {"spec": {"study": "phew", "dataset": "cifar10", "model": "vgg19-nobn", "method": "phew",
                            "density": "0.1", "seed": str(seed), "variant": "original"},
                   "density": 0.1, "final_test_acc": None if diverged else 0.8, "best_test_acc": None if diverged else 0.8,
                   "final_train_loss": None if diverged else 0.5, "epochs": 2, "diverged": diverged, "history": []}
        (run / "metrics.json").write_text(json.dumps(metrics))
        files.append(run / "metrics.json")
    runs = runs_table(files)
    assert runs["diverged"].tolist() == [False, True] and runs["final_test_acc"].isna().tolist() == [False, True]
    notes = getattr(FIGURES["accuracy_vs_density"](runs), "sparsenets_notes", [])  # the figure's caption line
    assert "1 diverged run(s) not shown (vgg19-nobn/phew)" in notes
    notes = getattr(FIGURES["accuracy_vs_density"](runs[~runs["diverged"]]), "sparsenets_notes", [])
    assert not [n for n in notes if "diverged" in n]


def test_synflow_scores_in_float64_where_the_float32_flow_overflows():
    """Weights scaled by 2^50 make R ~ 2^150 (float32 ends at 2^128); the mask stays exact and scale-free,
    and a flow beyond float64 is refused by name."""
    shape, classes = (1, 8, 8), 10

    def inputs() -> PruneInputs:
        return PruneInputs(seeded_generator(0), classes, shape, options={"iterations": 10})

    model = build_model("mlp", classes, shape, seed=0)
    plain = build_mask("synflow", model, 0.05, inputs())
    with torch.no_grad():
        for w in prunable(model).values():
            w.mul_(2.0**50)
    flow32 = functional_call(model, {k: p.abs() for k, p in model.named_parameters()}, (torch.ones(1, *shape),))
    assert torch.isinf(flow32.sum())
    scaled = build_mask("synflow", model, 0.05, inputs())
    assert scaled.kept == keep_count(0.05, scaled.total) and same(scaled, plain)
    model.double()
    with torch.no_grad():
        for w in prunable(model).values():
            w.mul_(2.0**350)
    with pytest.raises(FloatingPointError, match="overflows.*float64"):
        build_mask("synflow", model, 0.05, inputs())


# --------------------------------------------------------------------------------- security
def test_tracking_server_script_binds_localhost_and_keeps_the_password_off_the_command_line(tmp_path):
    """The real script, with an `mlflow` on PATH that prints the command line it was given (what `ps` shows)."""
    fake = tmp_path / "mlflow"
    fake.write_text('#!/bin/sh\necho "$@"\n')
    fake.chmod(0o755)
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin", "PGUSER": "mlflow", "PGDATABASE": "runs", "PGPASSWORD": "s3cret-pw"}
    proc = subprocess.run(["bash", str(REPO / "scripts/start_tracking_server.sh")], env=env, capture_output=True,
                          text=True, check=True, timeout=60)
    argv = proc.stdout.splitlines()[-1]
    assert re.search(r"--host 127\.0\.0\.1 ", argv) and "s3cret-pw" not in proc.stdout + proc.stderr


def test_test_servers_bind_localhost():
    """The PostgreSQL and MLflow servers of the cluster fixtures listen on 127.0.0.1 only."""
    source = (REPO / "tests/cluster.py").read_text()
    assert re.findall(r'"(?:listen_addresses|MLFLOW_HOST)": "([^"]*)"', source) == ["127.0.0.1"] * 2


def test_no_credentials_in_config_files():
    texts = [p.read_text() for p in [REPO / "config.yaml", *REPO.glob("workflow/profiles/*/*.yaml")]]
    assert texts and not any(re.search(r"://[^/\s:@]+:[^/\s@]+@|password|secret|token", t, re.I) for t in texts)
