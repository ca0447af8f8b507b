"""The whole DAG through the real snakemake on the tiny preset, checked file by file and run by run."""
from __future__ import annotations

import os
import sqlite3
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import PY, REPO

SNAKEMAKE = str(Path(PY).with_name("snakemake"))


def snakemake(workdir: Path, *args: str, check: bool = True, env: dict | None = None,
              configfile: bool = True) -> subprocess.CompletedProcess:
    """The real snakemake CLI on the repo's workflow, run in `workdir`."""
    config = ["--configfile", str(REPO / "config.yaml")] if configfile else []
    cmd = [SNAKEMAKE, "--snakefile", str(REPO / "Snakefile"), *config, "--directory", str(workdir), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=1500,
                          stdin=subprocess.DEVNULL)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return proc


def tiny_config() -> dict:
    return yaml.safe_load((REPO / "config.yaml").read_text())["presets"]["tiny"]["studies"]


def expected_runs(study: str) -> list[tuple]:
    s = tiny_config()[study]
    return [(d, m, meth, f"{float(dens):.4g}", seed) for d in s["datasets"] for m in s["models"]
            for meth in s["methods"] for dens in s["densities"] for seed in s["seeds"]]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("tiny")
    snakemake(work, "--cores", "2", "--config", "preset=tiny", env={"SPARSENETS_TRACKING_URI": ""})
    return work


@pytest.mark.e2e
def test_every_declared_output_exists(tiny_run):
    res = tiny_run / "results"
    for d, m, meth, dens, seed in expected_runs("phew"):
        run = res / "phew" / "runs" / d / m / meth / f"d{dens}" / f"s{seed}"
        for f in ("metrics.json", "model.pt", "mask.pt", "structure.json"):
            assert (run / f).stat().st_size > 0, run / f
        assert not (run / "checkpoint.pt").exists()
    for t in ("runs", "epochs", "layers"):
        assert len(pd.read_csv(res / "phew" / "tables" / f"{t}.csv")) > 0
    runs = pd.read_csv(res / "phew" / "tables" / "runs.csv")
    assert len(runs) == len(expected_runs("phew"))
    for fig in (res / "phew" / "figures").iterdir():
        assert fig.stat().st_size > 1000
    figs = {p.name for p in (res / "phew" / "figures").iterdir()}
    assert {"accuracy_vs_density.png", "accuracy_vs_density.pdf"} <= figs
    # every rule wrote its log
    assert (res / "logs" / "data" / "digits.log").exists()


@pytest.mark.e2e
def test_every_training_job_has_exactly_one_finished_mlflow_run(tiny_run):
    db = tiny_run / "results" / "mlflow.db"
    con = sqlite3.connect(db)
    rows = con.execute(
        "select r.run_uuid, r.name, r.status from runs r join experiments e on r.experiment_id = e.experiment_id "
        "where e.name = 'phew' and r.lifecycle_stage = 'active'").fetchall()
    expected = {f"{d}/{m}/{meth}/d{dens}/s{seed}" for d, m, meth, dens, seed in expected_runs("phew")}
    names = [r[1] for r in rows]
    assert sorted(names) == sorted(expected)
    assert {r[2] for r in rows} == {"FINISHED"}
    epochs = tiny_config()["phew"]["recipe"]
    n_epochs = yaml.safe_load((REPO / "config.yaml").read_text())["recipes"][epochs]["epochs"]
    for run_id, name, _ in rows:
        tags = dict(con.execute("select key, value from tags where run_uuid = ?", (run_id,)).fetchall())
        assert {"study", "model", "dataset", "method", "density", "seed", "variant", "git_commit"} <= set(tags), name
        steps = [s for (s,) in con.execute(
            "select step from metrics where run_uuid = ? and key = 'test_acc' order by step", (run_id,))]
        assert steps == list(range(1, n_epochs + 1)), name
        params = dict(con.execute("select key, value from params where run_uuid = ?", (run_id,)).fetchall())
        assert {"lr", "epochs", "weight_seed", "mask_seed", "data_seed"} <= set(params)


@pytest.mark.e2e
def test_rerun_does_nothing(tiny_run):
    before = (tiny_run / "results" / "mlflow.db").stat().st_mtime_ns
    proc = snakemake(tiny_run, "--cores", "2", "--config", "preset=tiny", env={"SPARSENETS_TRACKING_URI": ""})
    assert "Nothing to be done" in proc.stdout + proc.stderr
    assert (tiny_run / "results" / "mlflow.db").stat().st_mtime_ns == before


def test_default_preset_dry_run_prints_the_dag(tmp_path):
    proc = snakemake(tmp_path, "-n", "--quiet", "rules")
    assert "train" in proc.stdout and "total" in proc.stdout


@pytest.mark.parametrize("override,key", [("preset=nope", "preset"), ("threads_per_job=0", "threads_per_job")])
def test_bad_config_fails_before_any_job_naming_the_key(tmp_path, override, key):
    proc = snakemake(tmp_path, "-n", "--config", override, check=False)
    assert proc.returncode != 0
    assert key in proc.stdout + proc.stderr
    assert not (tmp_path / "results").exists()
