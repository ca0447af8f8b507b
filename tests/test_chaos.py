"""Chaos: the tiny pipeline's Deconstructing study (every kind of job: masks, the IMP chain, training,
sensitivity curves) while a driver SIGKILLs random training, mask and sensitivity jobs, and once
Snakemake itself. After each round, the README's recovery (`snakemake --unlock`, then the same command with
`--rerun-incomplete`); the end state must be the undisturbed run's (that study's files in the session's
`tiny_run`, which runs both studies): the same files byte for byte, one MLflow run per training job with each epoch logged once, no temporary or
orphaned file.

The driver's choices come from a seeded RNG; a failure prints the seed, and SPARSENETS_CHAOS_SEED=<seed>
replays those choices (process timing still varies from run to run).
"""
from __future__ import annotations

import json
import os
import random
import re
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from conftest import REPO, SNAKEMAKE, snakemake
from sparsenets.study import TRAINING, expand

SEED_ENV = "SPARSENETS_CHAOS_SEED"
SEED = int(os.environ.get(SEED_ENV, "2026"))
# What each round kills, in the order the DAG runs them (masks first, sensitivity curves last); Snakemake's
# round goes at a random place among the first three. Then one last round runs to the end.
ROUNDS = ("mask", "train", "train", "sensitivity")
VICTIM = re.compile(rb"-m\0sparsenets\0(train|mask|imp-mask|sensitivity)\0")
SQLITE_STORE = {"SPARSENETS_TRACKING_URI": ""}
STUDY = "deconstructing"  # one study keeps the test near 5 minutes; the other adds no kind of job to kill
CONFIG = ["--config", "preset=tiny", f"only_studies={STUDY}"]
JOBS = [j for j in expand(yaml.safe_load((REPO / "config.yaml").read_text()), "tiny") if j.study == STUDY]
# What is not compared, and why. Every other file of the study under results/ must be there in both and identical.
NOT_COMPARED = {  # neither listed nor read
    "results/mlflow.db": "the store: random run ids and wall-clock timestamps; checked by query below",
    "results/mlartifacts/": "copies of run files in folders named by random run ids",
    "results/claims.*, report.html, .mlflow-summary.json, logs/*.log": "about every study run (here one of two)",
}
NAMES_ONLY = {  # the same files in both, contents not compared
    "results/logs/": "job logs print wall-clock times (and a resumed job says so)",
}


def _json_without(drop):
    """A file's JSON, `drop(obj)` applied, dumped again."""
    def strip(data: bytes) -> bytes:
        obj = json.loads(data)
        drop(obj)
        return json.dumps(obj, sort_keys=True).encode()
    return strip


def _csv_without(column: str):
    """A CSV with one column dropped."""
    def strip(data: bytes) -> bytes:
        rows = [line.split(b",") for line in data.splitlines()]
        i = rows[0].index(column.encode())
        return b"\n".join(b",".join(r[:i] + r[i + 1:]) for r in rows)
    return strip


# Files compared with some values dropped (by file name): what they hold that no rerun can reproduce.
VOLATILE = {
    "metrics.json": _json_without(lambda obj: [row.pop("seconds") for row in obj["history"]]),  # epochs' wall-clock
    "epochs.csv": _csv_without("seconds"),  # the same seconds, one row per run and epoch
}


def processes(work: Path) -> dict[int, bytes]:
    """{pid: command line} of every process running in `work` (jobs run in Snakemake's --directory)."""
    found = {}
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and os.readlink(d / "cwd") == str(work.resolve()):
                found[int(d.name)] = (d / "cmdline").read_bytes()
        except OSError:
            continue
    return found


def victims(work: Path, kind: str = "") -> list[tuple[int, bytes]]:
    """Running training, mask (imp-mask too) and sensitivity jobs of this pipeline (of one kind), by pid."""
    return sorted((pid, cmd) for pid, cmd in processes(work).items()
                  if (m := VICTIM.search(cmd)) and m[1].decode().endswith(kind))


def describe(cmd: bytes) -> str:
    args = cmd.split(b"\0")
    out = next((args[i + 1] for i, a in enumerate(args[:-1]) if a in (b"--out-dir", b"--out")), b"?")
    return f"{args[args.index(b'sparsenets') + 1].decode()} {out.decode()}"


class Chaos:
    """Runs Snakemake round after round, each killed at random, and keeps a log of what it killed."""

    def __init__(self, work: Path, seed: int) -> None:
        self.work, self.rng, self.events = work, random.Random(seed), []
        self.cmd = [SNAKEMAKE, "--snakefile", str(REPO / "Snakefile"), "--configfile", str(REPO / "config.yaml"),
                    "--directory", str(work), "--cores", "4", *CONFIG]

    def start(self, n: int) -> subprocess.Popen:
        """Round n: the first run plain, later ones as the README's recovery (the lock is already released)."""
        extra = ["--rerun-incomplete"] if n else []
        with open(self.work / f"snakemake.{n}.out", "w") as out:
            return subprocess.Popen(self.cmd + extra, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env={**os.environ, **SQLITE_STORE})

    def kill_jobs(self, proc: subprocess.Popen, kind: str) -> bool:
        """SIGKILL one or two running jobs of `kind`, each picked at random after a random delay; False if none was."""
        return sum(self.kill_a_job(proc, kind) for _ in range(self.rng.randint(1, 2))) > 0

    def kill_a_job(self, proc: subprocess.Popen, kind: str) -> bool:
        """SIGKILL one running job of `kind`, picked at random after a random delay; False if the pipeline ended
        first."""
        while proc.poll() is None:
            running = victims(self.work, kind)
            if running:
                time.sleep(self.rng.uniform(0.2, 3.0))  # mid-import, mid-epoch, mid-write, mid-MLflow ...
                running = victims(self.work, kind)
            if running:
                pid, cmd = self.rng.choice(running)
                os.kill(pid, signal.SIGKILL)
                self.events.append(f"killed {kind} ({describe(cmd)})")
                return True
            time.sleep(0.1)
        return False

    def kill_snakemake(self, proc: subprocess.Popen) -> bool:
        """SIGKILL Snakemake while jobs run; its orphaned jobs finish on their own, unrecorded."""
        while proc.poll() is None and not victims(self.work):
            time.sleep(0.1)
        if proc.poll() is not None:
            return False
        time.sleep(self.rng.uniform(0.0, 2.0))
        proc.kill()
        proc.wait()
        self.events.append("killed snakemake")
        deadline = time.monotonic() + 300
        while processes(self.work):  # the orphans write their outputs, which Snakemake never marked complete
            assert time.monotonic() < deadline, f"orphaned jobs still running: {processes(self.work)}"
            time.sleep(0.2)
        return True

    def run(self, rounds: tuple[str, ...]) -> None:
        """One round per kind of job in `rounds`, and one that kills Snakemake, each followed by the recovery."""
        rounds = list(rounds)
        rounds.insert(self.rng.randrange(3), "snakemake")
        for n, kind in enumerate(rounds):
            proc = self.start(n)
            killed = self.kill_snakemake(proc) if kind == "snakemake" else self.kill_jobs(proc, kind)
            rc = proc.wait(timeout=600)
            self.events.append(f"round {n}: snakemake exited {rc}")
            if not killed:
                break
            snakemake(self.work, "--unlock", *CONFIG, env=SQLITE_STORE)
        snakemake(self.work, "--cores", "4", "--rerun-incomplete", *CONFIG, env=SQLITE_STORE)


def comparable(path: Path, root: Path) -> bytes:
    """The file's bytes, its VOLATILE values dropped, the workdir's path (in .tracking-ready.json) made neutral."""
    data = path.read_bytes()
    if path.name in VOLATILE:
        data = VOLATILE[path.name](data)
    return data.replace(str(root).encode(), b"<workdir>")


def outputs(root: Path) -> dict[str, Path]:
    """Every file of the study under results/ (its outputs and its jobs' logs), by its path relative to the workdir.
    The files of all studies (claims, report, the store) differ with the set of studies run: not compared."""
    files = {p.relative_to(root).as_posix(): p for p in (root / "results").rglob("*") if p.is_file()}
    return {name: p for name, p in files.items() if name.startswith((f"results/{STUDY}/", f"results/logs/{STUDY}/"))}


def check_store(db: Path, work: Path) -> None:
    """One active, finished run per training job; every epoch's metrics there once, as in metrics.json."""
    runs = {j.run.name: j for j in JOBS if j.kind in TRAINING}
    with sqlite3.connect(db) as con:
        active = con.execute("select r.run_uuid, t.value, r.status from runs r join tags t on t.run_uuid = r.run_uuid "
                             "and t.key = 'job' where r.lifecycle_stage = 'active'").fetchall()  # by job path
        assert sorted(name for _, name, _ in active) == sorted(runs), "not exactly one run per training job"
        assert {status for _, _, status in active} == {"FINISHED"}
        twice = con.execute("select r.name, m.key, m.step, count(*) from metrics m join runs r using (run_uuid) "
                            "where r.lifecycle_stage = 'active' group by m.run_uuid, m.key, m.step "
                            "having count(*) > 1").fetchall()
        assert not twice, f"metrics logged more than once: {twice[:10]}"
        for run_id, name, _ in active:
            metrics = json.loads((work / runs[name].dir / "metrics.json").read_text())
            logged = con.execute("select step, value from metrics where run_uuid = ? and key = 'test_acc' "
                                 "order by step", (run_id,)).fetchall()
            assert logged == [(h["epoch"], h["test_acc"]) for h in metrics["history"]], name


@pytest.mark.e2e
@pytest.mark.chaos
def test_random_kills_and_recovery_end_where_an_undisturbed_run_does(tiny_run: Path, tmp_path: Path) -> None:
    work = tmp_path / "chaos"
    work.mkdir()
    chaos = Chaos(work, SEED)
    try:
        chaos.run(ROUNDS)
        killed = {e.split()[1] for e in chaos.events if e.startswith("killed")}
        assert killed >= {"snakemake", "train", "mask", "sensitivity"}, "some kind of kill never happened"
        litter = [p for p in (work / "results").rglob("*") if p.name.endswith(".tmp") or p.name == "checkpoint.pt"]
        assert not litter, f"temporary files left behind: {litter}"
        ref, got = outputs(tiny_run), outputs(work)
        assert sorted(set(got) - set(ref)) == [], "files an undisturbed run does not leave"
        assert sorted(set(ref) - set(got)) == [], "files missing"
        differ = [name for name in ref if not name.startswith(tuple(NAMES_ONLY))
                  and comparable(ref[name], tiny_run) != comparable(got[name], work)]
        assert differ == [], "files that differ from the undisturbed run's"
        check_store(work / "results/mlflow.db", work)
    except Exception as e:
        events = "\n  ".join(chaos.events)
        raise AssertionError(f"{e}\nreplay with {SEED_ENV}={SEED} (workdir {work}); what the driver did:\n  {events}") from e
