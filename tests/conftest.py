"""Shared test fixtures: tiny data and models, all offline and seeded."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable


@pytest.fixture(autouse=True)
def _few_threads():
    """Tests share two cores with each other's subprocesses."""
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def digits_npz(tmp_path_factory) -> Path:
    from sparsenets import data

    return data.prepare("digits", tmp_path_factory.mktemp("data") / "digits.npz")


SNAKEMAKE = str(Path(PY).with_name("snakemake"))
# The tiny pipeline's --cores: 16 jobs at once (one thread each), the many writers of issue 23 on the default SQLite
# store. Measured on 2 cores: 147 jobs in 11 min 27 s, 64 runs all FINISHED, no "database is locked".
TINY_CORES = 16


def snakemake(workdir: Path, *args: str, check: bool = True, env: dict | None = None,
              configfile: bool = True) -> subprocess.CompletedProcess:
    """The real snakemake CLI on the repo's workflow, run in `workdir`."""
    config = ["--configfile", str(REPO / "config.yaml")] if configfile else []
    cmd = [SNAKEMAKE, "--snakefile", str(REPO / "Snakefile"), *config, "--directory", str(workdir), *args]
    # a guard against a hang, not a speed bound: the tiny pipeline took over 25 min beside three other pipelines here
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=3000,
                          stdin=subprocess.DEVNULL)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return proc


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """The whole tiny pipeline, run once per session and shared by the end-to-end tests."""
    work = tmp_path_factory.mktemp("tiny")
    # TINY_CORES jobs at once on the default SQLite store: parallel writers lose nothing, and none fails on
    # "database is locked" (test_faults.py::test_parallel_jobs_on_the_default_sqlite_store_...)
    snakemake(work, "--cores", str(TINY_CORES), "--config", "preset=tiny", env={"SPARSENETS_TRACKING_URI": ""})
    return work


CLUSTER_FIXTURES = {"slurm_cluster", "tracking_server", "postgres_mlflow_server"}


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Two workers (`make test`): a file's tests stay together (module fixtures run once); every test that
    reads the session's tiny pipeline joins one group, so the pipeline runs once, not once per worker; and
    every file that starts the SLURM cluster or the tracking server joins another, since those services keep
    their state in one fixed folder and a second worker starting them would stop the first one's daemons."""
    def fixtures(item: pytest.Item) -> set[str]:
        return set(getattr(item, "fixturenames", ()))

    def module(item: pytest.Item) -> str:
        return item.nodeid.split("::")[0]

    cluster_modules = {module(item) for item in items if fixtures(item) & CLUSTER_FIXTURES}
    for item in items:
        group = ("tiny_run" if "tiny_run" in fixtures(item) else
                 "cluster" if module(item) in cluster_modules else module(item))
        item.add_marker(pytest.mark.xdist_group(group))
