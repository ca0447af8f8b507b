"""Every Deconstructing figure draws from small synthetic tables, as the DAG calls it, into PNG and PDF."""
from __future__ import annotations

import itertools
import json

import numpy as np
import pandas as pd
import pytest

from sparsenets import figures, tables

SPEC = {"study": "deconstructing", "dataset": "cifar10", "model": "resnet18"}
METHODS = ["random", "imp", "dnw", "rigl"]
DENSITIES = [0.2, 0.05, 0.018]
SEEDS = [0, 1, 2]


def runs() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = [{**SPEC, "method": m, "density": d, "seed": s, "variant": v, "freeze_epoch": np.nan,
             "final_test_acc": 0.9 - 0.1 * (m == "random") - 0.05 * (v == "reinit") - 0.02 / d ** 0.5
             + 0.005 * rng.standard_normal()}
            for m, d, s, v in itertools.product(METHODS, DENSITIES, SEEDS, ["original", "reinit"])]
    rows += [{**SPEC, "method": f"dnw-freeze{k}", "density": 0.05, "seed": s, "variant": "original", "freeze_epoch": k,
              "final_test_acc": 0.85 - 0.05 / (1 + k) + 0.005 * rng.standard_normal()}
             for k, s in itertools.product([0, 1, 2, 3, 5, 10, 20, 40, 80, 160], SEEDS)]
    return pd.DataFrame(rows)


def sens() -> pd.DataFrame:
    return pd.DataFrame([
        {**SPEC, "method": m, "density": d, "seed": s, "variant": "original", "mode": mode,
         "bn_recalibrated": bn, "fraction": f, "test_acc": 0.9 * (1 - f ** (2 if m == "random" else 4)) + 0.01 * bn}
        for m, d, s, mode, bn, f in itertools.product(METHODS, DENSITIES, SEEDS, ["magnitude", "random"],
                                                      [False, True], [0.0, 0.2, 0.4, 0.6, 0.8, 0.9])])


def structure_tables(epochs: int = 30, units: int = 20) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(1)
    indeg, overlap = [], []
    for s in SEEDS:
        for layer in ("conv1.weight", "layer1.0.conv1.weight"):
            start = rng.integers(5, 50, units)
            drift = rng.normal(0, 1, units)
            indeg += [{**SPEC, "method": "dnw", "density": 0.05, "seed": s, "variant": "original", "epoch": e,
                       "layer": layer, "unit": u, "in_degree": max(0, int(start[u] + drift[u] * np.log(e))),
                       "in_channels": 3} for e in range(1, epochs + 1) for u in range(units)]
        overlap += [{**SPEC, "method": "dnw", "density": 0.05, "seed": s, "variant": "original", "epoch": e,
                     "overlap_prev": np.nan if e == 1 else 1 - 0.2 / e, "overlap_final": 1 - 0.4 / e}
                    for e in range(1, epochs + 1)]
    return pd.DataFrame(indeg), pd.DataFrame(overlap)


def _draw(tmp_path, name, frames, **options):
    tables = []
    for i, df in enumerate(frames):
        tables.append(str(tmp_path / f"t{i}.csv"))
        df.to_csv(tables[-1], index=False)
    outs = [tmp_path / f"{name}.png", tmp_path / f"{name}.pdf"]
    figures.draw(name, tables, [str(o) for o in outs], **options)
    return outs


@pytest.mark.parametrize("name, frames, options", [
    ("reinit", lambda: [runs()], {}),
    ("sensitivity", lambda: [sens()], {"density": 0.04}),
    ("indegree", lambda: list(structure_tables()), {"density": 0.05}),
    ("freezing", lambda: [runs()], {}),
])
def test_figure_is_drawn_to_png_and_pdf(tmp_path, name, frames, options):
    for out in _draw(tmp_path, name, frames(), **options):
        assert out.stat().st_size > 10_000, out


def test_freezing_without_a_full_dnw_run_still_draws(tmp_path):
    table = runs()
    table = table[table["freeze_epoch"].notna()]
    assert all(o.exists() for o in _draw(tmp_path, "freezing", [table]))


def test_indegree_groups_units_by_their_first_epoch_rank():
    # ten units with in-degree 10 - u at epoch 1, reversed by epoch 2; the layer's mean is 5.5 throughout
    indeg = pd.DataFrame([{**SPEC, "method": "dnw", "density": 0.05, "seed": 0, "variant": "original", "epoch": e,
                           "layer": "conv1.weight", "unit": u, "in_degree": 10 - u if e == 1 else u + 1}
                          for e in (1, 2) for u in range(10)])
    curves = figures._indegree_by_first_rank(indeg).set_index(["epoch", "after epoch 1"])["relative"]
    assert curves[1].tolist() == pytest.approx([1.5 / 5.5, 3.5 / 5.5, 5.5 / 5.5, 7.5 / 5.5, 9.5 / 5.5])
    assert curves[2].tolist() == pytest.approx(curves[1].tolist()[::-1])
    assert curves[1].index.tolist() == figures.QUINTILES


def test_structure_records_become_indegree_and_overlap_tables_and_a_figure(tmp_path):
    history = [{"epoch": e, "overlap_prev": None if e == 1 else 0.9, "overlap_final": 0.8 + 0.1 * e,
                "in_degree": {"conv1.weight": [[e, 2, 3, 4, 5], [1, 1, 2, 2, 3]], "fc.weight": [[7, 8], [7, 8]]}}
               for e in (1, 2)]
    files = []
    for method, record in (("dnw", {"history": history}), ("random", {})):
        run = tmp_path / method
        run.mkdir()
        spec = {**SPEC, "method": method, "density": "0.05", "seed": 3, "variant": "original"}
        (run / "metrics.json").write_text(json.dumps({"spec": spec}))
        (run / "structure.json").write_text(json.dumps({"summary": {}, "layers": [], **record}))
        files.append(run / "structure.json")
    indeg, overlap = tables.indegree_table(files), tables.overlap_table(files)
    assert len(indeg) == 2 * (5 + 2) and set(indeg["method"]) == {"dnw"}  # static runs record no history
    first = indeg[(indeg["epoch"] == 1) & (indeg["layer"] == "conv1.weight")]
    assert list(first["unit"]) == list(range(5)) and list(first["in_channels"]) == [1, 1, 2, 2, 3]
    assert indeg["density"].eq(0.05).all() and indeg["seed"].eq(3).all()
    assert list(overlap["epoch"]) == [1, 2] and overlap["overlap_prev"].isna().tolist() == [True, False]
    assert list(overlap["overlap_final"]) == pytest.approx([0.9, 1.0])
    assert all(o.stat().st_size > 10_000 for o in _draw(tmp_path, "indegree", [indeg, overlap]))


def with_magnitude(df: pd.DataFrame) -> pd.DataFrame:
    """The table with IMP's rows renamed `magnitude` (the registry name of magnitude at init)."""
    return df.assign(method=df["method"].replace({"imp": "magnitude"}), init_path_kernel_trace=1.0)


@pytest.mark.parametrize("name, frame", [("accuracy_vs_density", runs), ("path_kernel", runs), ("reinit", runs),
                                         ("sensitivity", sens)])
def test_legends_show_magnitude_at_init(name, frame):
    """The registry's `magnitude` prunes at initialisation: every legend says so."""
    import matplotlib.pyplot as plt

    fig = figures.FIGURES[name](with_magnitude(frame()))
    legend = [t.get_text() for t in fig.legends[0].texts]
    plt.close(fig)
    assert "magnitude at init" in legend and "magnitude" not in legend and "dnw" in legend


def test_tables_label_methods_with_their_display_names(tmp_path):
    for method in ("magnitude", "phew"):
        run = tmp_path / method
        run.mkdir()
        spec = {**SPEC, "study": "phew", "method": method, "density": "0.05", "seed": 0, "variant": "original"}
        (run / "metrics.json").write_text(json.dumps({
            "spec": spec, "density": 0.05, "final_test_acc": 0.5, "best_test_acc": 0.6, "final_train_loss": 1.0,
            "epochs": 1, "history": [{"epoch": 1, "density": 0.05, "train_loss": 1.0}]}))
        (run / "structure.json").write_text(json.dumps({"summary": {}, "layers": [{"layer": "fc.weight",
                                                                                 "density": 0.05}]}))
    metrics = sorted(tmp_path.glob("*/metrics.json"))
    structure = sorted(tmp_path.glob("*/structure.json"))
    for table in (tables.runs_table(metrics), tables.epochs_table(metrics), tables.layers_table(structure)):
        assert dict(zip(table["method"], table["label"])) == {"magnitude": "magnitude at init", "phew": "phew"}


def test_tables_group_runs_by_their_spec_density_and_keep_the_measured_ones(tmp_path):
    """Figures and claims match methods at the same configured density: a measured density (the mask's,
    an epoch's, a layer's) must not replace it."""
    spec = {**SPEC, "method": "random", "density": "0.05", "seed": 0, "variant": "original"}
    metrics = {"spec": spec, "density": 0.0499, "final_test_acc": 0.5, "best_test_acc": 0.6, "final_train_loss": 1.0,
               "epochs": 1, "history": [{"epoch": 1, "density": 0.0499, "train_loss": 1.0}]}
    structure = {"summary": {"density": 0.0499, "min_width_ratio": 0.5},
                 "layers": [{"layer": "fc.weight", "density": 0.07, "width_ratio": 0.5}]}
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    (tmp_path / "structure.json").write_text(json.dumps(structure))
    runs = tables.runs_table([tmp_path / "metrics.json"])
    epochs = tables.epochs_table([tmp_path / "metrics.json"])
    layers = tables.layers_table([tmp_path / "structure.json"])
    assert [t["density"].item() for t in (runs, epochs, layers)] == [0.05] * 3
    assert (runs["actual_density"].item(), epochs["actual_density"].item(), layers["layer_density"].item()) == (
        0.0499, 0.0499, 0.07)
