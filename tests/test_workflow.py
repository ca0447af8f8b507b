"""The whole DAG through the real snakemake on the tiny preset, checked file by file and run by run."""
from __future__ import annotations

import json
import sqlite3

import pandas as pd
import pytest
import torch
import yaml

from conftest import REPO, snakemake
from sparsenets.claims import VERDICTS
from sparsenets.experiments import derive_seeds
from sparsenets.masks import Mask
from sparsenets.models import build_model
from sparsenets.study import TRAINING, expand

CONFIG = yaml.safe_load((REPO / "config.yaml").read_text())
TINY = CONFIG["presets"]["tiny"]["studies"]
JOBS = expand(CONFIG, "tiny")
RUN_FILES = ("metrics.json", "model.pt", "mask.pt", "structure.json")


def of(kind: str, study: str) -> list[str]:
    """The tiny preset's tables or figures of a study, by name."""
    return [j.key.split("/", 1)[1] for j in JOBS if j.kind == kind and j.study == study]


def run_names(study: str) -> list[str]:
    """Every training run of a study in the tiny preset (IMP's levels and the dense run included), by its
    MLflow name (= its folder)."""
    return [j.run.name for j in JOBS if j.kind in TRAINING and j.study == study]


@pytest.mark.e2e
@pytest.mark.parametrize("study", list(TINY))  # the variant studies included
def test_every_declared_output_exists(tiny_run, study):
    res = tiny_run / "results" / study
    for name in run_names(study):
        for f in RUN_FILES:
            assert (res / "runs" / name / f).stat().st_size > 0, name
        assert not (res / "runs" / name / "checkpoint.pt").exists()
    for table in of("table", study):
        assert len(pd.read_csv(res / "tables" / f"{table}.csv")) > 0, table
    for fig in of("figure", study):
        for ext in ("png", "pdf"):
            assert (res / "figures" / f"{fig}.{ext}").stat().st_size > 1000, fig
    assert (tiny_run / "results" / "logs" / "data" / "digits.log").exists()  # every job writes a log


@pytest.mark.e2e
def test_tables_hold_one_row_per_run(tiny_run):
    runs = pd.read_csv(tiny_run / "results/phew/tables/runs.csv")
    # every method at every density: mag's dense and pruning runs are phases of it, in MLflow but not in the table
    assert len(runs) == sum(j.kind == "train" and j.study == "phew" for j in JOBS) < len(run_names("phew"))
    dec = pd.read_csv(tiny_run / "results/deconstructing/tables/runs.csv")
    assert set(dec["variant"]) == {"original", "reinit"}
    assert sorted(dec["freeze_epoch"].dropna().astype(int)) == sorted(TINY["deconstructing"]["freeze_epochs"])
    sens = pd.read_csv(tiny_run / "results/deconstructing/tables/sensitivity.csv")
    assert set(sens["mode"]) == {"magnitude", "random"} and set(sens["bn_recalibrated"]) == {True, False}


@pytest.mark.e2e
def test_imp_levels_restart_from_the_dense_runs_rewound_weights(tiny_run):
    runs = tiny_run / "results/deconstructing/runs/digits/convnet"
    dense = runs / "random/d1/s0"
    assert json.loads((dense / "metrics.json").read_text())["rewind_step"] == TINY["deconstructing"]["imp"]["rewind_step"]
    rewind = torch.load(dense / "rewind.pt", weights_only=True)
    init = build_model("convnet", 10, (1, 8, 8), seed=derive_seeds(0)["weight_seed"]).state_dict()
    final = torch.load(dense / "model.pt", weights_only=True)
    for other in (init, final):  # taken after some steps: neither the init nor the end
        assert any(not torch.equal(rewind[k], other[k]) for k in rewind)
    for level in TINY["deconstructing"]["imp"]["levels"]:
        run = runs / f"imp/d{0.5 ** level:.4g}/s0"
        assert json.loads((run / "metrics.json").read_text())["init_weights"].endswith("random/d1/s0/rewind.pt")


@pytest.mark.e2e
def test_layer_matched_random_copies_the_source_runs_layer_densities(tiny_run):
    runs = tiny_run / "results/deconstructing/runs/digits/convnet"
    for level in TINY["deconstructing"]["imp"]["levels"]:
        d = f"d{0.5 ** level:.4g}"
        source, matched = Mask.load(runs / f"dnw/{d}/s0/mask.pt"), Mask.load(runs / f"random-like-dnw/{d}/s0/mask.pt")
        assert {k: int(v.sum()) for k, v in matched.items()} == {k: int(v.sum()) for k, v in source.items()}
        assert any(not torch.equal(matched[k], source[k]) for k in source)


@pytest.mark.e2e
def test_claims_table_judges_every_claim(tiny_run):
    claims = pd.read_csv(tiny_run / "results/claims.csv")
    assert set(claims["id"]) == {f"C{i}" for i in range(1, 8)} | {"C5b"}
    assert set(claims["verdict"]) <= set(VERDICTS)
    numbers = claims.dropna(subset=["quantity"])
    assert {"C1", "C2", "C5", "C6"} <= set(numbers["id"])  # the tiny run has what these need
    assert (numbers["n_seeds"] >= 1).all() and numbers["mean"].notna().all()
    md = (tiny_run / "results/claims.md").read_text()
    assert "| Claim |" in md and "### C6" in md
    assert set(claims["study"]) == set(TINY)  # the variant studies are judged too, beside the main one
    assert "The studies side by side" in md and "deconstructing-erk" in md
    sens = pd.read_csv(tiny_run / "results/deconstructing/tables/sensitivity.csv")
    assert set(zip(sens["ranking"], sens["bn_recalibrated"])) == {(r, b) for r in ("global", "layer")
                                                                  for b in (False, True)}  # every reading, one job


@pytest.mark.e2e
@pytest.mark.parametrize("study", ["phew", "deconstructing"])
def test_every_training_job_has_exactly_one_finished_mlflow_run(tiny_run, study):
    con = sqlite3.connect(tiny_run / "results" / "mlflow.db")
    rows = con.execute(  # by the job's path (its `job` tag): run names are short, parents and summaries have none
        "select r.run_uuid, t.value, r.status from runs r join experiments e on r.experiment_id = e.experiment_id "
        "join tags t on t.run_uuid = r.run_uuid and t.key = 'job' where e.name = ? and r.lifecycle_stage = 'active'",
        (study,)).fetchall()
    assert sorted(r[1] for r in rows) == sorted(run_names(study))
    assert {r[2] for r in rows} == {"FINISHED"}
    epochs = {j.run.name: json.loads(j.params["recipe"])["epochs"] for j in JOBS if j.kind in TRAINING}
    for run_id, name, _ in rows:
        n_epochs = epochs[name]  # the recipe's, or mag's pruning phase's (mag.prune_epochs)
        tags = dict(con.execute("select key, value from tags where run_uuid = ?", (run_id,)).fetchall())
        assert {"study", "model", "dataset", "method", "seed", "variant", "git_commit"} <= set(tags), name
        steps = [s for (s,) in con.execute(
            "select step from metrics where run_uuid = ? and key = 'test_acc' order by step", (run_id,))]
        assert steps == list(range(1, n_epochs + 1)), name
        params = dict(con.execute("select key, value from params where run_uuid = ?", (run_id,)).fetchall())
        assert {"lr", "epochs", "weight_seed", "mask_seed", "data_seed", "density"} <= set(params)


@pytest.mark.e2e
def test_phew_res_masks_nest_and_mag_chains_dense_pruning_and_retraining_runs(tiny_run):
    res = tiny_run / "results/phew"
    runs = pd.read_csv(res / "tables/runs.csv")
    densities = sorted(TINY["phew"]["densities"])
    for method in ("phew-res", "mag"):
        assert sorted(runs.loc[runs["method"] == method, "density"]) == pytest.approx(densities), method
    masks = [Mask.load(res / f"masks/digits/mlp/phew-res/d{d:.4g}/s0.pt") for d in densities]
    assert all(bool((dense[k] | ~sparse[k]).all()) for sparse, dense in zip(masks, masks[1:]) for k in sparse)
    assert masks[1].meta["previous"].endswith(f"phew-res/d{densities[0]:.4g}/s0.pt")
    mag = res / f"runs/digits/mlp/mag/d{densities[0]:.4g}"
    prune = json.loads((mag / "prune/s0/metrics.json").read_text())
    assert [r["density"] for r in prune["history"]][-1] == pytest.approx(densities[0], abs=1e-4)
    assert prune["init_weights"].endswith("random/d1/s0/model.pt") and prune["topology"] == "gradual-magnitude"
    assert json.loads((mag / "s0/metrics.json").read_text())["init_weights"].endswith("prune/s0/model.pt")
    layers = pd.read_csv(res / "tables/layers.csv")
    assert {"phew-res", "mag"} <= set(layers["method"])
    claims = pd.read_csv(tiny_run / "results/claims.csv")
    assert not claims["method"].fillna("").str.contains("mag").any()  # a reference: no claim compares it


@pytest.mark.e2e
def test_rerun_does_nothing(tiny_run):
    before = (tiny_run / "results" / "mlflow.db").stat().st_mtime_ns
    proc = snakemake(tiny_run, "--cores", "4", "--config", "preset=tiny", env={"SPARSENETS_TRACKING_URI": ""})
    assert "Nothing to be done" in proc.stdout + proc.stderr
    assert (tiny_run / "results" / "mlflow.db").stat().st_mtime_ns == before


@pytest.mark.snakemake
def test_default_preset_dry_run_prints_the_dag(tmp_path):
    proc = snakemake(tmp_path, "-n", "--quiet", "rules")
    assert "train" in proc.stdout and "total" in proc.stdout


@pytest.mark.snakemake
@pytest.mark.parametrize("override,key", [
    ("preset=nope", "preset"), ("threads_per_job=0", "threads_per_job"),
    ("presets={'quick': {'studies': {'deconstructing': {'methods': ['random', 'random-like-snip']}}}}", "methods"),
])
def test_bad_config_fails_before_any_job_naming_the_key(tmp_path, override, key):
    proc = snakemake(tmp_path, "-n", "--config", override, check=False)
    assert proc.returncode != 0
    assert key in proc.stdout + proc.stderr
    assert not (tmp_path / "results").exists()
