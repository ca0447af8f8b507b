"""SIGTERM and SIGINT (SLURM's time limit, scancel, preemption; Ctrl-C), and runs left RUNNING by dead jobs.

Every job here is the real CLI in its own process, signalled for real: a training job stops after its current
step, checkpoints it, marks its MLflow run KILLED and exits 128 + n, and its rerun ends with the numbers of an
uninterrupted run; a mask, sensitivity or table job stopped in the middle of writing leaves no output and no
temporary file; a run whose job was SIGKILLed is marked KILLED by the next mlflow_init, a live job's is not.
The same on a real SLURM cluster (scancel, a time limit): tests/test_slurm_signals.py.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from sparsenets.experiments import make_mask, run_training
from sparsenets.study import Run
from sparsenets.signals import GRACE_S
from sparsenets.tracking import KILLED_BY, OWNER, Tracking, init_store, owner, owner_alive
from sparsenets.train import Recipe

RECIPE = {"epochs": 6, "batch_size": 8, "augment": False}  # 179 steps an epoch on digits: a signal lands mid-epoch
LONG = {**RECIPE, "epochs": 200}  # a job that is still running when the test is done with it
SLURM_LEAD_S = 120  # the SLURM profile's --signal=TERM@120: what a stopping job must stay within


@pytest.fixture(scope="module")
def files(digits_npz, tmp_path_factory) -> dict[str, Path]:
    """A mask, a migrated (empty) SQLite store to copy, and a finished run (for sensitivity and table jobs)."""
    out = tmp_path_factory.mktemp("signals")
    make_mask("mlp", digits_npz, "random", 0.2, 0, out / "mask.pt", device="cpu")
    init_store(f"sqlite:///{out / 'store.db'}", [])
    run_training(Run("digits", "mlp", "random", 0.2, 0, study="phew"), Recipe(epochs=1, batch_size=64, augment=False),
                 data_file=digits_npz, mask_file=out / "mask.pt", out_dir=out / "done", device="cpu", log=lambda m: None)
    return {"data": digits_npz, "mask": out / "mask.pt", "store": out / "store.db", "done": out / "done"}


def store(files: dict[str, Path], tmp_path: Path) -> tuple[str, Path]:
    path = tmp_path / "mlflow.db"
    shutil.copy(files["store"], path)
    return f"sqlite:///{path}", path


def train_cmd(files: dict[str, Path], out: Path, uri: str, *, seed: int = 0, topology: str = "static",
              recipe: dict = RECIPE) -> list[str]:
    return [sys.executable, "-m", "sparsenets", "train", "--study", "phew", "--dataset", "digits", "--model", "mlp",
            "--method", "random", "--density", "0.2", "--seed", str(seed), "--data", str(files["data"]),
            "--mask", str(files["mask"]), "--recipe", json.dumps(recipe), "--topology", topology, "--device", "cpu",
            "--out-dir", str(out), "--tracking-uri", uri]


class Job:
    """A job in its own process, its output collected line by line (each line seen as soon as it is printed)."""

    def __init__(self, cmd: list[str]) -> None:
        env = {k: v for k, v in os.environ.items() if k != "SPARSENETS_TRACKING_URI"}  # only the store a test names
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     stdin=subprocess.DEVNULL, env=env)
        self.lines: list[str] = []
        self._new = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            with self._new:
                self.lines.append(line)
                self._new.notify_all()
        with self._new:
            self._new.notify_all()

    def wait_for(self, pattern: str, timeout: float = 600) -> None:
        """Until a line matches `pattern` (fails if the job ends first)."""
        deadline = time.monotonic() + timeout
        with self._new:
            while not any(re.search(pattern, line) for line in self.lines):
                assert self.proc.poll() is None, f"job ended before {pattern!r}:\n{self.output}"
                assert time.monotonic() < deadline, f"no {pattern!r} after {timeout} s:\n{self.output}"
                self._new.wait(0.5)

    def stop(self, sig: int, timeout: float = 600) -> tuple[int, float]:
        """Send `sig`; the exit status and the seconds the job took to exit."""
        t0 = time.monotonic()
        self.proc.send_signal(sig)
        rc = self.proc.wait(timeout=timeout)
        return rc, time.monotonic() - t0

    @property
    def output(self) -> str:
        return "".join(self.lines)


def runs(db: Path) -> list[dict]:
    """Every live training run of the store: its status, its tags and its test_acc steps."""
    with sqlite3.connect(db) as con:
        rows = con.execute("select run_uuid, status from runs where lifecycle_stage = 'active'").fetchall()
        out = []
        for run_id, status in rows:
            tags = dict(con.execute("select key, value from tags where run_uuid = ?", (run_id,)).fetchall())
            steps = [s for (s,) in con.execute("select step from metrics where run_uuid = ? and key = 'test_acc' "
                                               "order by step", (run_id,))]
            if "job" in tags:
                out.append({"id": run_id, "status": status, "tags": tags, "steps": steps})
    return out


def wait_for_runs(db: Path, n: int, timeout: float = 600) -> None:
    """Until the store holds `n` training runs (a job's MLflow worker starts its run while it trains)."""
    deadline = time.monotonic() + timeout
    while len(runs(db)) < n:
        assert time.monotonic() < deadline, f"fewer than {n} runs in {db} after {timeout} s"
        time.sleep(0.5)


def without_seconds(metrics: dict) -> dict:
    for row in metrics["history"]:
        row.pop("seconds")
    return metrics


STOPPED = re.compile(r"stopped by (\w+) [\d.]+ s after it, at step \d+ \(epoch (\d+), batch (\d+)/(\d+)\)")


@pytest.mark.parametrize("sig, topology", [(signal.SIGTERM, "static"), (signal.SIGINT, "dnw")],
                         ids=["SIGTERM-static", "SIGINT-dnw"])
def test_a_signal_stops_training_after_its_step_marks_the_run_killed_and_the_rerun_ends_as_an_uninterrupted_run(
        files, tmp_path, sig, topology):
    uri, db = store(files, tmp_path)
    cmd = train_cmd(files, tmp_path / "run", uri, topology=topology)
    job = Job(cmd)
    job.wait_for(r"epoch   1/")  # the signal lands early in epoch 2 (179 steps)
    rc, took = job.stop(sig)
    print(f"{sig.name}: exited {took:.2f} s after the signal (stated grace {GRACE_S:g} s plus one step)")
    assert rc == 128 + sig, job.output
    stopped = STOPPED.search(job.output)
    assert stopped and stopped[1] == sig.name and stopped[2] == "2", job.output
    epoch, batch, batches = int(stopped[2]), int(stopped[3]), int(stopped[4])
    assert 0 < batch < batches  # the epoch in progress is kept up to the step the signal came in
    state = torch.load(tmp_path / "run/checkpoint.pt", weights_only=False)
    assert (state["epoch"], state["batch"]) == (epoch - 1, batch)
    if "MLflow run marked KILLED" in job.output:  # else the store took longer than TRACKING_WAIT_S (a loaded machine)
        [run] = runs(db)
        assert (run["status"], run["tags"][KILLED_BY], run["steps"]) == ("KILLED", sig.name, list(range(1, epoch)))
    else:
        assert "MLflow run not marked KILLED: no answer from the store" in job.output, job.output
    assert took < SLURM_LEAD_S  # within what SLURM gives it before the SIGKILL (a bound, not a benchmark)
    assert not list((tmp_path / "run").glob(".*.tmp"))

    rerun = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert f"after epoch {epoch - 1} and {batch} batches of the next" in rerun.stdout
    reference = tmp_path / "reference"
    run_training(Run("digits", "mlp", "random", 0.2, 0, study="phew"), Recipe(**RECIPE), data_file=files["data"],
                 mask_file=files["mask"], out_dir=reference, topology=topology, device="cpu", log=lambda m: None)
    resumed, uninterrupted = (json.loads((d / "metrics.json").read_text()) for d in (tmp_path / "run", reference))
    assert without_seconds(resumed) == without_seconds(uninterrupted)
    assert (tmp_path / "run/model.pt").read_bytes() == (reference / "model.pt").read_bytes()
    [run] = runs(db)  # one run, finished, every epoch once
    assert (run["status"], run["steps"]) == ("FINISHED", list(range(1, RECIPE["epochs"] + 1)))
    assert KILLED_BY not in run["tags"]
    if "run_id" in state["extra"]:  # its MLflow run was known when it stopped: continued, why it stopped kept
        assert (run["id"], run["tags"]["resumed_after"]) == (state["extra"]["run_id"], sig.name)


def test_a_run_left_running_by_a_killed_job_is_marked_killed_by_mlflow_init_and_a_live_jobs_run_is_not(
        files, tmp_path):
    uri, db = store(files, tmp_path)
    dead = Job(train_cmd(files, tmp_path / "dead", uri, recipe=LONG))
    live = Job(train_cmd(files, tmp_path / "live", uri, seed=1, recipe=LONG))
    for job in (dead, live):
        job.wait_for(r"epoch   1/")
    wait_for_runs(db, 2)
    dead.stop(signal.SIGKILL)
    by_seed = {r["tags"]["seed"]: r for r in runs(db)}
    assert by_seed["0"]["status"] == by_seed["1"]["status"] == "RUNNING"  # what the UI showed until now
    init_store(uri, ["phew"])  # what mlflow_init does
    by_seed = {r["tags"]["seed"]: r for r in runs(db)}
    assert by_seed["0"]["status"] == "KILLED" and by_seed["0"]["tags"][KILLED_BY].startswith("stale: its job died")
    assert by_seed["1"]["status"] == "RUNNING" and KILLED_BY not in by_seed["1"]["tags"]
    assert json.loads(by_seed["1"]["tags"][OWNER])["pid"] == live.proc.pid
    rc, _ = live.stop(signal.SIGTERM)
    assert rc == 143, live.output
    assert {r["tags"]["seed"]: r["status"] for r in runs(db)} == {"0": "KILLED", "1": "KILLED"}


def test_an_owner_is_dead_only_when_that_is_certain():
    me = owner()
    assert owner_alive(json.dumps(me)) is True
    gone = subprocess.Popen(["sleep", "0"])
    gone.wait()
    assert owner_alive(json.dumps({**me, "pid": gone.pid})) is False  # its pid is free (or another process's)
    assert owner_alive(json.dumps({**me, "start": "1"})) is False  # the pid was reused by a later process
    elsewhere = {**me, "host": "another-node", "slurm_job": ""}
    assert owner_alive(json.dumps(elsewhere)) is None  # another host, no SLURM job to ask about: left alone
    assert owner_alive("not json") is None


def test_a_stopping_job_gives_up_on_an_unreachable_store_and_its_worker_ends(unused_port):
    track = Tracking(f"http://127.0.0.1:{unused_port}", "phew", "job")
    track("set_tags", {KILLED_BY: "SIGTERM"})
    assert track.close("KILLED", timeout=1.0) is False
    workers = [t for t in threading.enumerate() if t.name.startswith("mlflow")]
    for worker in workers:
        worker.join(60)  # it stops retrying at once; the bound is for a loaded machine
        assert not worker.is_alive()


@pytest.fixture
def unused_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def blocked_in_fifo(pid: int) -> bool:
    """Whether the process waits for a reader of the FIFO it opens for writing (Linux: wchan)."""
    try:
        return Path(f"/proc/{pid}/wchan").read_text() == "wait_for_partner"
    except OSError:
        return False


def job_cmds(files: dict[str, Path], out: Path) -> dict[str, list[str]]:
    py = [sys.executable, "-m", "sparsenets"]
    return {
        "mask": py + ["mask", "--dataset", "digits", "--data", str(files["data"]), "--model", "mlp", "--method", "snip",
                      "--density", "0.1", "--seed", "0", "--device", "cpu", "--out", str(out)],
        "sensitivity": py + ["sensitivity", "--run-dir", str(files["done"]), "--data", str(files["data"]),
                             "--fractions", "0.0", "0.5", "--device", "cpu", "--out", str(out)],
        "table": py + ["table", "--kind", "epochs", "--out", str(out), str(files["done"] / "metrics.json")],
    }


@pytest.mark.skipif(not Path("/proc/self/wchan").exists(), reason="needs Linux's /proc/PID/wchan")
@pytest.mark.parametrize("kind, name", [("mask", "mask.pt"), ("sensitivity", "curve.json"), ("table", "epochs.csv")])
def test_sigterm_in_the_middle_of_writing_leaves_no_output_and_no_temporary_file(files, tmp_path, kind, name):
    """The job's temporary file is a FIFO nobody reads: the job blocks in the middle of writing its output
    (opening the temporary file), exactly where a partial file could be left; SIGTERM it there."""
    out = tmp_path / name
    os.mkfifo(tmp_path / f".{name}.tmp")
    job = Job(job_cmds(files, out)[kind])
    deadline = time.monotonic() + 600
    while not blocked_in_fifo(job.proc.pid):
        assert job.proc.poll() is None and time.monotonic() < deadline, job.output
        time.sleep(0.05)
    rc, _ = job.stop(signal.SIGTERM)
    assert rc == 143, job.output
    assert "error: stopped by SIGTERM" in job.output
    assert list(tmp_path.iterdir()) == []  # neither the output nor its temporary file
