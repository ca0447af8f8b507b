"""A results folder that moves keeps its MLflow artifacts, and the UI draws accuracy against density.

A small real store (six tiny training runs and a summary run, SQLite) is made in one folder, moved to
another (the first deleted), and read back through a real MLflow server (`mlflow ui`) started the way the README says:
its artifacts through MLflow's client and through the endpoint the UI uses, its parents' accuracy-by-density
curves, and the UI's Chart view in headless Chromium (screenshot kept beside the test's tmp folder)."""
from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from conftest import REPO
from sparsenets.experiments import make_mask, run_training
from sparsenets.study import Run
from sparsenets.styles import style
from sparsenets.tracking import CURVE, CURVE_STEP, artifact_dir, init_store, short_method, summary_run
from sparsenets.train import Recipe

METHODS, DENSITIES = ("random", "snip", "random-like-imp"), (0.05, 0.2)
ARTIFACTS = {"metrics.json", "structure.json", "mask.pt"}


def made_store(digits_npz: Path, root: Path) -> Path:
    """`root/results` with a SQLite store: METHODS x DENSITIES trained for one epoch, then the summary run."""
    results = root / "results"
    uri = f"sqlite:///{results / 'mlflow.db'}"
    methods = [m if m != "random-like-imp" else "random" for m in METHODS]  # its mask: any layer-matched random
    init_store(uri, ["phew"], [f"phew/digits/mlp/{m}" for m in METHODS])
    for method, mask_method in zip(METHODS, methods):
        for d in DENSITIES:
            mask = root / f"masks/{method}-{d}.pt"
            mask.parent.mkdir(parents=True, exist_ok=True)
            make_mask("mlp", digits_npz, mask_method, d, 0, mask)
            run_training(Run("digits", "mlp", method, d, 0, study="phew"), Recipe(epochs=1, batch_size=64, augment=False),
                         data_file=digits_npz, mask_file=mask, out_dir=root / f"runs/{method}/d{d}", tracking_uri=uri,
                         device="cpu", log=lambda m: None)
    (root / "figure.png").write_bytes(b"\x89PNG not really")
    (root / "claims.md").write_text("| Study | claim |\n|---|---|\n| phew | C1 |\n")
    summary_run(uri, "phew", [root / "figure.png"], root / "claims.md")
    return results


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def moved(digits_npz, tmp_path_factory) -> Path:
    """The store, made in one folder and moved to another; the first folder is gone."""
    made = tmp_path_factory.mktemp("made")
    results = made_store(digits_npz, made)
    there = tmp_path_factory.mktemp("laptop") / "results"
    shutil.move(results, there)
    shutil.copytree(made / "runs", there.parent / "runs")  # the runs' own files, to compare with
    shutil.rmtree(made)
    return there


@pytest.fixture(scope="module")
def server(moved):
    """`mlflow ui` (MLflow's server) on the moved store, as the README starts it (from the results folder's parent)."""
    port = free_port()
    [line] = [line for line in (REPO / "README.md").read_text().splitlines() if line.startswith(".venv/bin/mlflow ui")]
    args = line.split()[1:]
    assert args[:6] == ["ui", "--backend-store-uri", "sqlite:///results/mlflow.db", "--artifacts-destination",
                        "results/mlartifacts", "--host"], line
    args[args.index("--port") + 1] = str(port)  # the README's command, on a free port
    cmd = [sys.executable, "-m", "mlflow", *args, "--workers", "1"]
    proc = subprocess.Popen(cmd, cwd=moved.parent, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read()[-2000:]
            try:
                if requests.get(f"{url}/health", timeout=2).ok:
                    break
            except requests.RequestException:
                time.sleep(1)
        else:
            pytest.fail("mlflow server did not answer /health in 180 s")
        yield url
    finally:
        proc.terminate()
        proc.wait(30)


def runs_of(url: str) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(url)
    exp = client.get_experiment_by_name("phew")
    return client.search_runs([exp.experiment_id], max_results=1000)


def test_locations_are_relative_to_the_store(moved):
    """No absolute path into the folder the runs were made in: each run's artifacts resolve beside the store."""
    import sqlite3

    with sqlite3.connect(moved / "mlflow.db") as con:
        uris = [u for (u,) in con.execute("select artifact_uri from runs")]
    assert uris and all(u.startswith("mlflow-artifacts:/phew/") for u in uris), uris
    uri = f"sqlite:///{moved / 'mlflow.db'}"
    assert all(artifact_dir(uri, u).is_relative_to(moved / "mlartifacts") for u in uris)


def test_a_moved_store_serves_every_artifact(moved, server):
    """Each training run's three files and the summary's figure and claims, through MLflow's client and the
    UI's own endpoint (get-artifact), byte for byte as the jobs wrote them."""
    from mlflow.tracking import MlflowClient

    client, runs = MlflowClient(server), runs_of(server)
    trained = [r for r in runs if "job" in r.data.tags]
    assert len(trained) == len(METHODS) * len(DENSITIES)
    for run in trained:
        assert {a.path for a in client.list_artifacts(run.info.run_id)} == ARTIFACTS, run.info.run_name
        method, density = run.data.tags["method"], run.data.params["density"]
        page = requests.get(f"{server}/get-artifact", params={"path": "metrics.json", "run_uuid": run.info.run_id},
                            timeout=30)
        assert page.status_code == 200, page.text[:500]
        assert page.content == (moved.parent / f"runs/{method}/d{density}/metrics.json").read_bytes()
    [summary] = [r for r in runs if r.data.tags.get("summary") == "phew"]
    assert {a.path for a in client.list_artifacts(summary.info.run_id, "figures")} == {"figures/figure.png"}
    local = client.download_artifacts(summary.info.run_id, "claims.md", str(moved.parent))
    assert "| phew | C1 |" in Path(local).read_text()


def test_each_methods_parent_holds_its_accuracy_by_density(server):
    """One curve per method on its parent: step = density in ppm, value = the seed-mean final accuracy."""
    from mlflow.tracking import MlflowClient

    client, runs = MlflowClient(server), runs_of(server)
    parents = {r.data.tags["method"]: r for r in runs if "parent_key" in r.data.tags}
    assert sorted(parents) == sorted(METHODS)
    for method, parent in parents.items():
        history = client.get_metric_history(parent.info.run_id, CURVE + "final_test_acc")
        children = {r.data.params["density"]: r.data.metrics["final_test_acc"] for r in runs
                    if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
        assert {m.step: m.value for m in history} == {round(float(d) * CURVE_STEP): a for d, a in children.items()}
        assert len(history) == len(DENSITIES)
        assert parent.data.tags["mlflow.runColor"] == style(method).color  # the figures' colour, in the UI


def test_run_names_fit_the_runs_table(server):
    names = {r.info.run_name for r in runs_of(server) if "job" in r.data.tags}
    assert "rl-imp d0.05 s0" in names and max(map(len, names)) <= 16, names


@pytest.mark.e2e
def test_the_ui_draws_accuracy_against_density_per_method(server, moved, tmp_path):
    """The README's two clicks, as a URL: the experiment's runs in Chart view show the by_density section with
    its one chart (`by_density/final_test_acc`, one line per method's parent), the parents listed by their
    short names; the screenshot (kept in the test's tmp folder) shows the lines in the methods' colours."""
    from mlflow.tracking import MlflowClient
    from test_report import chromium

    exp = MlflowClient(server).get_experiment_by_name("phew").experiment_id
    page = f"{server}/#/experiments/{exp}/runs?compareRunsMode=CHART&workflowType=machine_learning"
    shot = tmp_path / "mlflow_chart.png"  # kept: pytest keeps the last three sessions' tmp folders
    base = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1600,1000",
            "--virtual-time-budget=30000"]
    for _ in range(4):  # on a loaded machine the page may still be fetching runs when the time budget ends
        done = subprocess.run([*base, "--dump-dom", page], capture_output=True, text=True, timeout=180,
                              stdin=subprocess.DEVNULL)
        assert done.returncode == 0, done.stderr[-2000:]
        dom = done.stdout
        if ">by_density<" in dom:
            break
    # the Chart view's section of the parents' curve, holding its one chart (the card itself draws lazily)
    assert re.search(r">by_density</div><div[^>]*>\(1\)<", dom), dom[-3000:]
    for method in METHODS:
        assert f"{short_method(method)} digits/mlp" in dom, method
    for _ in range(4):
        done = subprocess.run([*base, f"--screenshot={shot}", page], capture_output=True, text=True, timeout=180,
                              stdin=subprocess.DEVNULL)
        assert done.returncode == 0, done.stderr[-2000:]
        if shot.stat().st_size > 60_000:  # the charts drawn (the bare page is smaller)
            break
    assert shot.stat().st_size > 60_000
