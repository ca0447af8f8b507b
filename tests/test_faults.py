"""Cluster-grade faults provoked for real: many writers on one SQLite store, two Snakemake instances on one
folder, a full disk, a damaged DNW epoch-mask file. Each ends with nothing lost (README, Guarantees).
"""
from __future__ import annotations

import errno
import json
import multiprocessing
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import PY, REPO, SNAKEMAKE, TINY_CORES, snakemake
from sparsenets import io
from sparsenets.experiments import make_mask, run_training
from sparsenets.study import Run
from sparsenets.masks import Mask, atomic_save
from sparsenets.tracking import init_store
from sparsenets.train import Recipe


def without_seconds(metrics: dict) -> dict:
    return {**metrics, "history": [{k: v for k, v in row.items() if k != "seconds"} for row in metrics["history"]]}


# ------------------------------------------------------------------ many writers
def job_runs(db: Path) -> list[tuple[str, str, str]]:
    """(experiment, job tag, status) of every active training run of a SQLite store."""
    with sqlite3.connect(db) as con:
        return con.execute("select e.name, t.value, r.status from runs r join experiments e using (experiment_id) "
                           "join tags t on t.run_uuid = r.run_uuid and t.key = 'job' "
                           "where r.lifecycle_stage = 'active'").fetchall()


@pytest.mark.e2e
def test_parallel_jobs_on_the_default_sqlite_store_end_with_one_finished_run_each(tiny_run):
    """The tiny pipeline runs TINY_CORES (16) jobs at once (conftest): every training job
    has one FINISHED run and no job (nor Snakemake) met "database is locked" (SQLite waits, then
    `tracking._retry` backs off)."""
    assert TINY_CORES >= 16
    results = tiny_run / "results"
    jobs = sorted((p.relative_to(results).parts[0], str(p.parent.relative_to(results / p.relative_to(results).parts[0]
                                                                                / "runs")))
                  for p in results.glob("*/runs/**/metrics.json"))
    assert len(jobs) >= 16
    runs = job_runs(results / "mlflow.db")
    assert sorted((study, job) for study, job, _ in runs) == jobs  # one run per job, none twice
    assert {status for *_, status in runs} == {"FINISHED"}
    logs = [*results.rglob("*.log"), *(tiny_run / ".snakemake" / "log").glob("*.log")]
    locked = [str(f) for f in logs if "database is locked" in f.read_text(errors="replace")]
    assert len(logs) > len(jobs) and not locked


# ------------------------------------------------------------------ two Snakemake instances on one folder
ONE_RUN = "results/phew/runs/digits/mlp/random/d0.05/s0"


@pytest.mark.e2e
def test_a_second_snakemake_on_the_same_folder_stops_with_a_clear_message_and_disturbs_nothing(tiny_run, tmp_path):
    """While a first instance trains one run of the tiny preset, a second one asking for the whole preset in
    the same folder exits non-zero at once, saying the folder is locked by another instance and how to
    remove a stale lock; the first finishes with the files of the tiny pipeline's own run."""
    cmd = [SNAKEMAKE, "--snakefile", str(REPO / "Snakefile"), "--configfile", str(REPO / "config.yaml"),
           "--directory", str(tmp_path), f"{ONE_RUN}/metrics.json", "--cores", "2", "--config", "preset=tiny"]
    env = {**os.environ, "SPARSENETS_TRACKING_URI": ""}  # the target before --config, which takes every word after it
    first = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             stdin=subprocess.DEVNULL)
    train_log = tmp_path / "results/logs/phew/runs/digits/mlp/random/d0.05/s0.log"
    deadline = time.monotonic() + 900
    while not train_log.exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert train_log.exists() and first.poll() is None, "the first instance never started its training job"
    # the first instance is paused while the second builds its DAG (tens of seconds on a loaded machine, longer
    # than one tiny training job): else it may finish and release its lock first, and the second runs everything
    frozen = process_tree(first.pid)
    for pid in frozen:
        os.kill(pid, signal.SIGSTOP)
    try:
        # as `make run` and the README's recovery run it: without --rerun-incomplete Snakemake may stop earlier,
        # at the first instance's outputs in progress ("incomplete"), before it looks at the lock
        second = snakemake(tmp_path, "--cores", "2", "--rerun-incomplete", "--config", "preset=tiny", check=False,
                           env={"SPARSENETS_TRACKING_URI": ""})
    finally:
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)
    out = second.stdout + second.stderr
    assert second.returncode != 0
    assert "Directory cannot be locked" in out and "no other Snakemake process" in out and "--unlock" in out, out
    assert first.poll() is None, "the second instance outlived the first one's training: the test proves nothing"
    log = first.communicate(timeout=900)[0]
    assert first.returncode == 0, log[-3000:]
    got, ref = (json.loads((root / ONE_RUN / "metrics.json").read_text()) for root in (tmp_path, tiny_run))
    assert without_seconds(got) == without_seconds(ref)
    for name in ("mask.pt", "model.pt", "structure.json"):
        assert (tmp_path / ONE_RUN / name).read_bytes() == (tiny_run / ONE_RUN / name).read_bytes(), name
    trained = sorted(str(p.parent.relative_to(tmp_path)) for p in (tmp_path / "results").glob("*/runs/**/metrics.json"))
    assert trained == [ONE_RUN]  # the second instance ran nothing


def process_tree(root: int) -> list[int]:
    """`root` and every process below it, from /proc (parents before children)."""
    parent = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended while we read
            continue
        parent[int(stat.parent.name)] = int(fields[1])
    tree = [root]
    for pid in tree:
        tree += [child for child, ppid in parent.items() if ppid == pid]
    return tree


# ------------------------------------------------------------------ a store initialised by many jobs at once
def _init(uri: str, barrier, results) -> None:
    barrier.wait()
    try:
        init_store(uri, ["race"], ["race/digits/mlp/random"])
        results.put("ok")
    except BaseException as e:  # noqa: BLE001 - reported to the test
        results.put(f"{type(e).__name__}: {e}")


def test_a_fresh_store_initialised_by_sixteen_jobs_at_once_fails_none(tmp_path):
    """Sixteen processes create one new SQLite store at the same moment: without the lock beside it their
    schema migrations collide ("table ... already exists"); with it one migrates, the others wait and go on."""
    db, ctx = tmp_path / "mlflow.db", multiprocessing.get_context("fork")  # forked: mlflow is imported once
    barrier, results = ctx.Barrier(16), ctx.Queue()
    procs = [ctx.Process(target=_init, args=(f"sqlite:///{db}", barrier, results)) for _ in range(16)]
    for p in procs:
        p.start()
    answers = [results.get(timeout=600) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert answers == ["ok"] * 16 and [p.exitcode for p in procs] == [0] * 16, answers
    with sqlite3.connect(db) as con:
        assert con.execute("select count(*) from experiments where name = 'race'").fetchone() == (1,)
        assert con.execute("select count(*) from runs r join tags t on t.run_uuid = r.run_uuid and t.key = "
                           "'parent_key' where r.lifecycle_stage = 'active'").fetchone() == (1,)


# ------------------------------------------------------------------ a full disk
@pytest.fixture
def small_fs(tmp_path):
    """A 16 MiB tmpfs of the test's own, to fill up; skipped where mounting is not allowed (not root)."""
    fs = tmp_path / "fs"
    fs.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(fs)], capture_output=True,
                             text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root or CAP_SYS_ADMIN): {mounted.stderr.strip()}")
    try:
        yield fs
    finally:
        subprocess.run(["umount", "-l", str(fs)], check=True)


def fill(fs: Path, leave: int) -> Path:
    """Fill `fs` up to `leave` bytes of free space (to a page); return the filler, to delete to free it."""
    filler = fs / "filler"
    with open(filler, "ab") as f:
        f.write(b"\0" * max(0, shutil.disk_usage(fs).free - leave))
    return filler


WRITERS = {  # each writer of the package, with a payload far larger than the space left
    "table (write_text)": lambda p: io.write_text(p, "x" * 2**20),
    "json (write_json)": lambda p: io.write_json(p, {"x": list(range(200_000))}),
    "npz (save_npz)": lambda p: io.save_npz(p, {"x": np.arange(200_000)}),
    "mask (Mask.save)": lambda p: Mask({"w": torch.rand(1000, 1000) > 0.5}).save(p),
    "checkpoint (atomic_save)": lambda p: atomic_save({"model": torch.zeros(300_000)}, p),
}


@pytest.mark.parametrize("writer", WRITERS)
def test_a_write_that_runs_out_of_space_leaves_nothing_and_names_the_file_and_the_free_space(small_fs, writer):
    target = small_fs / "out" / "file"
    io.write_text(target, "old")
    filler = fill(small_fs, 64 * 1024)
    with pytest.raises(io.DiskFull) as caught:
        WRITERS[writer](target)
    message = str(caught.value)
    assert caught.value.errno == errno.ENOSPC and "\n" not in message
    assert re.match(rf"no space left on device writing {re.escape(str(target))}: [0-9.]+ KiB free on its "
                    r"filesystem \(it needs more than the [0-9.]+ KiB written\); nothing was written", message), message
    assert target.read_text() == "old" and sorted(p.name for p in small_fs.rglob("*")) == ["file", "filler", "out"]
    filler.unlink()
    WRITERS[writer](target)
    assert target.stat().st_size > 100_000


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-m", "sparsenets", *args], capture_output=True, text=True, timeout=900,
                          stdin=subprocess.DEVNULL)


RECIPE = {"epochs": 3, "batch_size": 64, "lr": 0.05, "milestones": [2], "augment": False}
SPEC = Run("digits", "mlp", "random", 0.2, 0, study="faults")


def train_args(data: Path, mask: Path, out: Path, uri: str = "") -> list[str]:
    return ["train", "--study", SPEC.study, "--dataset", "digits", "--data", str(data), "--model", "mlp", "--method",
            "random", "--density", "0.2", "--seed", "0", "--device", "cpu", "--mask", str(mask), "--recipe",
            json.dumps(RECIPE), "--out-dir", str(out), "--tracking-uri", uri]


class Stop(BaseException):
    """Ends an in-process run after its first epoch, its checkpoint on disk."""


@pytest.fixture(scope="module")
def reference(digits_npz, tmp_path_factory) -> dict:
    """The mask, an uninterrupted run's metrics, and the size of one checkpoint of that run."""
    work = tmp_path_factory.mktemp("reference")
    make_mask("mlp", digits_npz, "random", 0.2, 0, work / "mask.pt")
    kw = dict(data_file=digits_npz, mask_file=work / "mask.pt", tracking_uri=None, device="cpu")
    run_training(SPEC, Recipe.from_dict(RECIPE), out_dir=work / "run", log=lambda m: None, **kw)

    def stop(msg: str) -> None:
        if msg.startswith("epoch   1/"):
            raise Stop

    with pytest.raises(Stop):
        run_training(SPEC, Recipe.from_dict(RECIPE), out_dir=work / "stopped", log=stop, **kw)
    return {"mask": work / "mask.pt", "metrics": json.loads((work / "run" / "metrics.json").read_text()),
            "checkpoint_bytes": (work / "stopped" / "checkpoint.pt").stat().st_size}


@pytest.fixture(scope="module")
def migrated_store(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("store") / "mlflow.db"
    init_store(f"sqlite:///{path}", [])
    return path


def failed_with_one_line(proc: subprocess.CompletedProcess, path: Path, quiet: bool = True) -> str:
    """The job's error line, its last: it failed naming `path` and the free space, with no traceback of its
    own (`quiet`: none at all; MLflow logs the SQLite error it caught with its trace before re-raising it)."""
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert not quiet or "Traceback" not in proc.stderr, proc.stderr[-3000:]
    [line] = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert proc.stderr.rstrip().endswith(line)
    assert re.match(rf"error: no space left on device writing {re.escape(str(path))}: [0-9.]+ (B|KiB|MiB) free on "
                    r"its filesystem", line), line
    return line


def test_a_training_job_out_of_space_fails_naming_the_checkpoint_and_its_rerun_ends_as_an_uninterrupted_run(
        small_fs, reference, digits_npz, migrated_store, tmp_path):
    """Room for one checkpoint and a half: epoch 1's is written, epoch 2's is not. The job fails with one
    line, leaves no temporary file, keeps epoch 1's checkpoint (as checkpoint.prev.pt) and its MLflow run
    (FAILED); once space is freed, its rerun resumes after epoch 1 and ends with the uninterrupted numbers."""
    out, uri = small_fs / "run", f"sqlite:///{tmp_path / 'mlflow.db'}"
    shutil.copy(migrated_store, tmp_path / "mlflow.db")
    filler = fill(small_fs, int(1.5 * reference["checkpoint_bytes"]))
    failed = cli(*train_args(digits_npz, reference["mask"], out, uri))
    failed_with_one_line(failed, out / "checkpoint.pt")
    assert "epoch   1/3" in failed.stdout and "epoch   2/3" not in failed.stdout
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.prev.pt"]
    filler.unlink()
    rerun = cli(*train_args(digits_npz, reference["mask"], out, uri))
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert re.search(r"resuming from \S+checkpoint\.prev\.pt after epoch 1", rerun.stdout), rerun.stdout
    got = json.loads((out / "metrics.json").read_text())
    assert without_seconds(got) == without_seconds(reference["metrics"])
    with sqlite3.connect(tmp_path / "mlflow.db") as con:
        assert con.execute("select status from runs where lifecycle_stage = 'active' and run_uuid in "
                           "(select run_uuid from tags where key = 'job')").fetchall() == [("FINISHED",)]


def test_a_tracking_store_out_of_space_fails_the_job_naming_it_and_its_rerun_finishes_the_run(
        small_fs, reference, digits_npz, migrated_store, tmp_path):
    """The default SQLite store on a full disk: the job fails with one line naming the database; once space
    is freed, its rerun ends with the uninterrupted numbers and one FINISHED run."""
    db = small_fs / "mlflow.db"
    shutil.copy(migrated_store, db)
    filler = fill(small_fs, 0)
    failed = cli(*train_args(digits_npz, reference["mask"], tmp_path / "run", f"sqlite:///{db}"))
    failed_with_one_line(failed, db, quiet=False)
    assert not (tmp_path / "run" / "metrics.json").exists()
    filler.unlink()
    rerun = cli(*train_args(digits_npz, reference["mask"], tmp_path / "run", f"sqlite:///{db}"))
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    got = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert without_seconds(got) == without_seconds(reference["metrics"])
    with sqlite3.connect(db) as con:
        assert con.execute("select status from runs where lifecycle_stage = 'active' and run_uuid in "
                           "(select run_uuid from tags where key = 'job')").fetchall() == [("FINISHED",)]


def test_mask_and_table_jobs_out_of_space_fail_with_one_line_and_write_the_same_bytes_once_it_is_freed(
        small_fs, reference, digits_npz, tmp_path):
    mask_args = ["mask", "--dataset", "digits", "--data", str(digits_npz), "--model", "mlp", "--method", "random",
                 "--density", "0.2", "--seed", "0", "--device", "cpu"]
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps({**reference["metrics"], "spec": SPEC.tags()}))
    jobs = {small_fs / "mask.pt": [*mask_args, "--out", str(small_fs / "mask.pt")],
            small_fs / "runs.csv": ["table", "--kind", "epochs", "--out", str(small_fs / "runs.csv"), str(metrics)]}
    filler = fill(small_fs, 0)
    for out, args in jobs.items():
        failed_with_one_line(cli(*args), out)
    assert sorted(p.name for p in small_fs.iterdir()) == ["filler"]
    filler.unlink()
    for out, args in jobs.items():
        assert cli(*args).returncode == 0 and out.stat().st_size > 0
    assert (small_fs / "mask.pt").read_bytes() == reference["mask"].read_bytes()


# ------------------------------------------------------------------ a damaged DNW epoch mask
def die_after_epoch(n: int):
    def log(msg: str) -> None:
        if msg.startswith(f"epoch {n:>3}/"):
            raise Stop
    return log


@pytest.mark.parametrize("damaged, resumed_from", [(3, 2), (1, 0)])
def test_a_damaged_epoch_mask_is_set_aside_and_the_dnw_run_ends_as_an_uninterrupted_one(
        digits_npz, tmp_path, migrated_store, damaged, resumed_from):
    """A DNW run killed after epoch 3, then one of its epoch masks cut short: the rerun moves it aside to
    `e000N.pt.damaged`, names it in its log and on its MLflow run, goes on from the last checkpoint taken
    before that epoch ended (epoch 2 for the last mask; from scratch for epoch 1's, which no kept checkpoint
    predates), and ends with the metrics and structure (overlaps) of an uninterrupted run."""
    make_mask("mlp", digits_npz, "random", 0.2, 0, tmp_path / "mask.pt")
    spec = Run("digits", "mlp", "dnw", 0.2, 0, study="faults")
    recipe = Recipe(epochs=5, batch_size=64, augment=False)
    kw = dict(data_file=digits_npz, mask_file=tmp_path / "mask.pt", device="cpu", topology="dnw")
    run_training(spec, recipe, out_dir=tmp_path / "reference", tracking_uri=None, log=lambda m: None, **kw)
    shutil.copy(migrated_store, tmp_path / "mlflow.db")
    uri, run = f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "run"
    with pytest.raises(Stop):
        run_training(spec, recipe, out_dir=run, tracking_uri=uri, log=die_after_epoch(3), **kw)
    cut = run / "epoch_masks" / f"e{damaged:04d}.pt"
    cut.write_bytes(cut.read_bytes()[:200])
    lines: list[str] = []
    result = run_training(spec, recipe, out_dir=run, tracking_uri=uri, log=lines.append, **kw)
    log = "\n".join(lines)
    assert f"damaged epoch mask {cut} (" in log and f"moved it aside to {cut}.damaged" in log, log
    assert result.resumed_from == resumed_from
    for name in ("metrics.json", "structure.json"):
        got, ref = (json.loads((d / name).read_text()) for d in (run, tmp_path / "reference"))
        assert (without_seconds(got) if name == "metrics.json" else got) == \
            (without_seconds(ref) if name == "metrics.json" else ref), name
    assert sorted(p.name for p in (run / "epoch_masks").iterdir()) == [f"{cut.name}.damaged"]  # kept: post-mortem
    with sqlite3.connect(tmp_path / "mlflow.db") as con:
        [(status, tag)] = con.execute("select r.status, t.value from runs r join tags t on t.run_uuid = r.run_uuid "
                                      "and t.key = 'damaged_epoch_mask' where r.lifecycle_stage = 'active'").fetchall()
    assert status == "FINISHED" and tag == f"{cut}.damaged"
