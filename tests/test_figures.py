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


# ------------------------------------------------------------------------------ paper-ready: one look everywhere
PHEW_SPEC = {"study": "phew", "dataset": "cifar10", "model": "resnet20"}
PHEW_METHODS = ["random", "snip", "synflow", "synflow-l2", "phew", "phew-reinit"]


def phew_runs(seeds=SEEDS, densities=(0.1, 0.04, 0.018)) -> pd.DataFrame:
    """PHEW-study runs; phew-reinit equals phew and synflow-l2 equals synflow, seed by seed (as at tiny scale)."""
    base = {"random": 0.5, "snip": 0.6, "synflow": 0.62, "synflow-l2": 0.62, "phew": 0.7, "phew-reinit": 0.7}
    return pd.DataFrame([{**PHEW_SPEC, "method": m, "density": d, "seed": s, "variant": "original",
                          "final_test_acc": base[m] + 0.01 * s + d, "init_path_kernel_trace": 10 ** (base[m] * 10 + d)}
                         for m, d, s in itertools.product(PHEW_METHODS, densities, seeds)])


def lines_of(fig) -> dict[str, list]:
    """method (gid) -> the lines drawn for it, over every panel."""
    out = {}
    for ax in fig.axes:
        for line in ax.get_lines():
            if line.get_gid():
                out.setdefault(line.get_gid(), []).append(line)
    return out


def registry_methods() -> set[str]:
    """Every method a study can list, as figures see them: the registries', IMP, mag, random-like-M of each
    method that has a final structure of its own, and DNW frozen after k epochs."""
    import yaml

    from conftest import REPO
    from sparsenets import pruning, topology

    pruning.load_all()
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    listed = {m for p in config["presets"].values() for s in p["studies"].values() for m in s["methods"]}
    return ({m for m in pruning.METHODS if m != "random-like"} | set(topology.methods()) | {"imp", "mag"} | listed
            | {"random-like-imp", "random-like-dnw", "random-like-rigl", "dnw-freeze0", "dnw-freeze160"})


def test_every_method_has_its_own_colour_and_marker():
    methods = registry_methods()
    unlisted = {m for m in methods if figures.style(m) not in figures.STYLES.values()}
    assert not unlisted, f"give these methods a style in their sparsenets.catalogue entry: {unlisted}"
    colours = [s.color.lower() for s in figures.STYLES.values()]
    assert len(colours) == len(set(colours))
    assert figures.style("dnw-freeze3") == figures.STYLES["dnw-freezeK"]
    assert figures.style("some-new-method") == figures.style("some-new-method")  # a spare style, stable
    assert figures.style("some-new-method").color not in colours


def test_a_method_looks_the_same_in_the_figures_of_both_studies():
    import matplotlib.pyplot as plt

    phew = figures.FIGURES["accuracy_vs_density"](phew_runs())
    dec = figures.FIGURES["reinit"](runs())
    sens_fig = figures.FIGURES["sensitivity"](sens())
    try:
        drawn = [lines_of(f) for f in (phew, dec, sens_fig)]
        for fig_lines in drawn:
            line = fig_lines["random"][0]
            assert (line.get_color(), line.get_marker()) == (figures.STYLES["random"].color,
                                                            figures.STYLES["random"].marker)
        colours = {m: {line.get_color() for line in ls} for d in drawn for m, ls in d.items()}
        assert all(len(c) == 1 for c in colours.values()), colours
        assert len({next(iter(c)) for c in colours.values()}) == len(colours)  # no two methods share a colour
    finally:
        for f in (phew, dec, sens_fig):
            plt.close(f)


def test_identical_series_stay_visible_and_the_caption_says_so(tmp_path):
    import matplotlib.pyplot as plt

    fig = figures.FIGURES["accuracy_vs_density"](phew_runs())
    drawn = lines_of(fig)
    text = figures.caption(fig, [phew_runs()], "quick")
    plt.close(fig)
    first, twin = drawn["phew"][0], drawn["phew-reinit"][0]
    assert first.get_markerfacecolor() != "none" and twin.get_markerfacecolor() == "none"
    assert twin.get_markersize() > first.get_markersize() and twin.get_linestyle() != "-"
    assert "phew-reinit coincides with phew where drawn hollow" in text and "synflow-l2 coincides with synflow" in text
    assert "snip coincides" not in text


def test_one_point_series_has_a_marker_and_one_seed_draws_no_band():
    import matplotlib.pyplot as plt
    from matplotlib.collections import PolyCollection

    one = phew_runs(seeds=[0], densities=(0.05,))
    fig = figures.FIGURES["accuracy_vs_density"](one)
    text = figures.caption(fig, [one], "tiny")
    assert all(line.get_marker() not in (None, "None", "") for ls in lines_of(fig).values() for line in ls)
    assert not any(isinstance(c, PolyCollection) for ax in fig.axes for c in ax.collections)
    assert "no band" in text and "1 seed (0)" in text and "Preset tiny" in text
    plt.close(fig)
    fig = figures.FIGURES["accuracy_vs_density"](phew_runs())
    assert any(isinstance(c, PolyCollection) for ax in fig.axes for c in ax.collections)
    assert "bands: ± 1 std" in figures.caption(fig, [phew_runs()], "quick")
    plt.close(fig)


def test_density_axes_are_alike_in_both_studies_and_epochs_are_integers():
    import matplotlib.pyplot as plt

    drawn = [figures.FIGURES["accuracy_vs_density"](phew_runs()), figures.FIGURES["path_kernel"](phew_runs()),
             figures.FIGURES["reinit"](runs())]
    try:
        axes = [f.axes[0] for f in drawn]
        assert len({ax.get_xlabel() for ax in axes}) == 1
        for ax, densities in zip(axes, [(0.1, 0.04, 0.018)] * 2 + [DENSITIES]):
            assert ax.get_xscale() == "log" and ax.xaxis_inverted()
            assert sorted(ax.get_xticks()) == pytest.approx(sorted(densities))
        epochs = pd.DataFrame([{**PHEW_SPEC, "method": m, "density": 0.05, "seed": 0, "epoch": e, "train_loss": 2 / e}
                               for m in ("random", "phew") for e in range(1, 8)])
        loss = figures.FIGURES["train_loss"](epochs)
        drawn.append(loss)
        ticks = [t for t in loss.axes[0].get_xticks() if 1 <= t <= 7]
        assert ticks and all(float(t).is_integer() for t in ticks)
    finally:
        for f in drawn:
            plt.close(f)


@pytest.mark.parametrize("name, frames, options", [
    ("accuracy_vs_density", lambda: [phew_runs()], {}),
    ("reinit", lambda: [runs()], {}),
    ("sensitivity", lambda: [sens()], {"density": 0.05}),
    ("indegree", lambda: list(structure_tables(epochs=5, units=10)), {"density": 0.05}),
    ("freezing", lambda: [runs()], {}),
])
def test_pdfs_embed_truetype_fonts_and_pngs_carry_the_caption(tmp_path, name, frames, options):
    from PIL import Image

    png, pdf = _draw(tmp_path, name, frames(), preset="quick", **options)
    data = pdf.read_bytes()
    assert b"/Subtype /Type3" not in data and b"/FontFile2" in data  # TrueType embedded, no Type 3
    description = Image.open(png).text["Description"]
    assert description.startswith("Preset quick. 3 seeds (0, 1, 2). lines: mean over seeds; bands: ± 1 std")


def test_the_type3_check_would_catch_type3_fonts(tmp_path):
    import matplotlib.pyplot as plt

    fig = figures.FIGURES["reinit"](runs())
    with plt.rc_context({"pdf.fonttype": 3}):
        fig.savefig(tmp_path / "t3.pdf")
    plt.close(fig)
    assert b"/Subtype /Type3" in (tmp_path / "t3.pdf").read_bytes()


# ---------------------------------------------------------------------- figures that agree with the claims (issue 22)
def test_methods_of_one_study_differ_in_hue_at_a_glance():
    """No two methods a study of any preset draws together look alike (ΔE ≥ 20), and claim C4's pairs least of all:
    IMP, RigL and random-like-IMP were three near-identical oranges."""
    import yaml

    from conftest import REPO
    from sparsenets.styles import distance

    config = yaml.safe_load((REPO / "config.yaml").read_text())
    studies = {(p, s): set(spec["methods"]) | ({"random-like-imp", "random-like-dnw", "random-like-rigl"}
                                               if spec["protocol"] == "deconstructing" else set())
               for p, preset in config["presets"].items() for s, spec in preset["studies"].items()}
    for where, methods in studies.items():
        for a, b in itertools.combinations(sorted(methods), 2):
            gap = distance(figures.style(a).color, figures.style(b).color)
            assert gap >= 20, f"{where}: {a} and {b} look alike (ΔE {gap:.0f})"
    for a, b in [("imp", "random-like-imp"), ("imp", "rigl"), ("rigl", "random-like-imp")]:
        assert distance(figures.style(a).color, figures.style(b).color) >= 35, (a, b)
    markers = [s.marker for s in figures.STYLES.values()]
    assert len(markers) == len(set(markers)) + 1  # dnw-freeze alone shares random's circle (it has its own figure)


def with_random_like_imp() -> pd.DataFrame:
    r = runs()
    like = r[r["method"] == "imp"].assign(method="random-like-imp", final_test_acc=lambda d: d["final_test_acc"] - 0.03)
    return pd.concat([r, like], ignore_index=True)


def test_reinit_draws_c4s_comparisons_as_c4_tests_them():
    """Panel (a): re-initialised IMP against re-initialised random-like-IMP; panel (b): re-initialised DNW and RigL
    against re-initialised random: the means C4 compares (sparsenets.claims.c4), nothing else."""
    import matplotlib.pyplot as plt

    table = with_random_like_imp()
    fig = figures.FIGURES["reinit"](table)
    try:
        everything, a, b = fig.axes[:3]
        assert "C4 (a)" in a.get_title() and "C4 (b)" in b.get_title()
        fresh = table[(table["variant"] == "reinit") & table["freeze_epoch"].isna()]
        for ax, methods in ((a, {"imp", "random-like-imp"}), (b, {"random", "dnw", "rigl"})):
            drawn = {line.get_gid(): line for line in ax.get_lines() if line.get_gid()}
            assert set(drawn) == methods
            for m, line in drawn.items():
                expected = fresh[fresh["method"] == m].groupby("density")["final_test_acc"].mean()
                assert sorted(line.get_ydata()) == pytest.approx(sorted(expected))
        assert {line.get_gid() for line in everything.get_lines()} >= {"imp", "random-like-imp", "rigl"}
    finally:
        plt.close(fig)
    fig = figures.FIGURES["reinit"](runs())  # no random-like-imp: panel (a) says C4 cannot test it
    texts = [t.get_text() for t in fig.axes[1].texts]
    plt.close(fig)
    assert any("random-like-imp" in t and "cannot test" in t for t in texts), texts


def test_layer_axes_name_the_layers_and_group_many_by_stage():
    import matplotlib.pyplot as plt

    names = ["conv1"] + [f"layer{s}.{b}.conv{c}" for s in (1, 2, 3) for b in range(3) for c in (1, 2)] + ["fc"]
    table = pd.DataFrame([{**PHEW_SPEC, "method": m, "density": 0.05, "seed": 0, "variant": "original",
                           "layer_index": i, "layer": f"{n}.weight", "width_ratio": 0.5}
                          for m in ("random", "phew") for i, n in enumerate(names)])
    fig = figures.FIGURES["layer_widths"](table)
    ax = fig.axes[0]
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    stages = [t.get_text() for t in ax.texts]
    plt.close(fig)
    assert len(ticks) == len(names) and ticks[0] == "conv1" and ticks[1] == "0.conv1" and ticks[-1] == "fc"
    assert stages == ["conv1", "layer1", "layer2", "layer3", "fc"]
    small = table[table["layer_index"] < 3].assign(layer=lambda d: d["layer_index"].map(
        {0: "fc1.weight", 1: "fc2.weight", 2: "fc3.weight"}))
    fig = figures.FIGURES["layer_widths"](small)
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["fc1", "fc2", "fc3"] and not fig.axes[0].texts
    plt.close(fig)
