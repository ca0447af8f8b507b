"""The papers' figures: tidy tables in, one figure out (PNG and PDF), one function each.

Paper-ready and alike across studies. Each method has one colour, marker and line style in every figure, its
family's hue (sparsenets.styles: IMP orange, RigL purple, random-like-IMP a grey tinted orange, ...). Every line
is the mean over seeds; a band of ± 1 std is drawn wherever a point has more than one seed, and nowhere else. A
series identical to one drawn before it (random-like-dnw on random, phew-reinit on phew at tiny scale) is drawn
hollow and dashed so both stay visible, and the caption line says so. The caption line, under the panels, is
short: preset, seeds, what the bands are; it is also the PNG's Description and the PDF's Subject. Density axes
are alike in both studies: log scale, sparsest on the right, ticked at the densities run. Layer axes name the
layers (grouped by stage when there are many). The reinit figure draws claim C4's two comparisons as the claim
tests them. PDFs embed TrueType fonts (no Type 3), as publishers ask.
"""
from __future__ import annotations

import os
import textwrap
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import MaxNLocator, NullFormatter  # noqa: E402

from .io import atomic_path  # noqa: E402
from .labels import label  # noqa: E402
from .study import ORIGINAL  # noqa: E402
from .styles import FAMILIES, STYLES, Style, ordered, style  # noqa: E402,F401  (one style per method: styles.py)

FigureFn = Callable[..., plt.Figure]
FIGURES: dict[str, FigureFn] = {}
PAPER_RC = {"pdf.fonttype": 42, "ps.fonttype": 42, "svg.fonttype": "none"}  # TrueType, never Type 3


BAND_ALPHA = 0.18
MAX_DENSITY_LABELS = 6  # more densities than this: every one ticked, some labelled


def figure(name: str) -> Callable[[FigureFn], FigureFn]:
    def deco(fn: FigureFn) -> FigureFn:
        FIGURES[name] = fn
        return fn

    return deco


# --------------------------------------------------------------------------------------------- drawing
def draw(name: str, tables: list[str], outs: list[str], preset: str | None = None, **options: Any) -> None:
    """Read the tidy tables, draw figure `name` with its caption line (`preset` is named in it), save it to
    every path in `outs` atomically."""
    if name not in FIGURES:
        raise ValueError(f"unknown figure {name!r}; known: {', '.join(sorted(FIGURES))}")
    frames = [pd.read_csv(t) for t in tables]
    sns.set_theme(context="paper", style="whitegrid", font_scale=1.1)
    with plt.rc_context(PAPER_RC):
        fig = FIGURES[name](*frames, **options)
        text = caption(fig, frames, preset)
        _caption_line(fig, text)
        for out in outs:
            save(fig, out, text)
    plt.close(fig)


def save(fig: plt.Figure, out: str | os.PathLike, description: str = "") -> None:
    """Whole or not at all (io.atomic_path); the format comes from `out`'s suffix, not the temporary name's.
    The caption goes into the file's metadata; the PDF carries no creation date, so a redraw is identical."""
    fmt = Path(out).suffix.lstrip(".").lower()
    metadata = {"png": {"Description": description}, "pdf": {"Subject": description, "CreationDate": None},
                "svg": {"Description": description, "Date": None}}.get(fmt)
    with plt.rc_context(PAPER_RC), atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=150, bbox_inches="tight", format=fmt, metadata=metadata)


def caption(fig: plt.Figure, frames: list[pd.DataFrame], preset: str | None) -> str:
    """The line under the panels: preset, seeds, what the lines and bands are, and which series coincide."""
    seeds = sorted({int(s) for f in frames if "seed" in f for s in f["seed"].dropna().unique()})
    parts = [f"Preset {preset}" if preset else "",
             f"{len(seeds)} seed{'s' * (len(seeds) != 1)} ({', '.join(map(str, seeds))})" if seeds else ""]
    parts.append("lines: mean over seeds; bands: ± 1 std over seeds (the spread; the claims decide on 95 % "
                 "t-intervals of the mean, claims.md)" if getattr(fig, "sparsenets_band", False)
                 else "lines: one seed per point, so no band")
    parts += getattr(fig, "sparsenets_notes", [])
    return ". ".join(p for p in parts if p) + "."


def _caption_line(fig: plt.Figure, text: str) -> None:
    width = int(fig.get_figwidth() * 14)  # characters per inch at 8 pt
    fig.text(0.01, 0.0, textwrap.fill(text, width), ha="left", va="top", fontsize=8, color="0.25",
             gid="caption")


def _note(fig: plt.Figure, text: str) -> None:
    notes = fig.__dict__.setdefault("sparsenets_notes", [])
    if text not in notes:
        notes.append(text)


def _line(ax: plt.Axes, df: pd.DataFrame, x: str, y: str, *, color: Any, marker: str, dashes: tuple = (),
          hollow: bool = False, gid: str = "", label_: str = "") -> pd.Series:
    """One series: its mean over seeds at each x, a ± 1 std band where a point has several seeds (error
    bars for a one-point series). Returns the means (to find identical series)."""
    g = df.groupby(x)[y].agg(["mean", "std", "count"]).sort_index()
    markevery = max(1, len(g) // 12)
    size = 6.5 if hollow else 4.5
    line, = ax.plot(g.index, g["mean"], color=color, marker=marker, markevery=markevery, markersize=size,
                    markerfacecolor="none" if hollow else color, markeredgewidth=1.3 if hollow else 0.8,
                    linewidth=1.4, label=label_, gid=gid)
    if dashes:
        line.set_dashes(dashes)
    several = g["count"] > 1
    if several.any():
        lo, hi = g["mean"] - g["std"].fillna(0), g["mean"] + g["std"].fillna(0)
        if len(g) == 1:
            ax.errorbar(g.index, g["mean"], yerr=g["std"], color=color, capsize=3, linewidth=1, fmt="none")
        else:
            ax.fill_between(g.index, lo, hi, where=several.to_numpy(), color=color, alpha=BAND_ALPHA,
                            linewidth=0, interpolate=True)
        ax.figure.sparsenets_band = True
    return g["mean"]


def _same(a: pd.Series, b: pd.Series) -> bool:
    return a.index.equals(b.index) and np.allclose(a.to_numpy(), b.to_numpy(), rtol=1e-9, atol=1e-12)


def _methods(ax: plt.Axes, df: pd.DataFrame, x: str, y: str, *, by: str | None = None,
             dashes: Mapping[Any, tuple] | None = None) -> list[str]:
    """One line per method (and per value of `by`, told apart by `dashes`) in its fixed style. A series
    identical to one drawn before it is drawn hollow (and dashed, if its style is solid) and noted once in
    the caption. Returns the methods drawn, in order."""
    methods = ordered(df["method"].unique())
    groups = [None] if by is None else list(dashes or sorted(df[by].unique()))
    for value in groups:
        part = df if by is None else df[df[by] == value]
        drawn: dict[str, pd.Series] = {}
        for method in methods:
            rows = part[part["method"] == method]
            if rows.empty:
                continue
            s = style(method)
            twin = next((m for m, means in drawn.items() if _same(means, rows.groupby(x)[y].mean().sort_index())),
                        None)
            base = (dashes or {}).get(value, ()) or s.dashes
            drawn[method] = _line(ax, rows, x, y, color=s.color, marker=s.marker, hollow=twin is not None,
                                  dashes=base or ((3, 2) if twin else ()), gid=method, label_=label(method))
            if twin:
                _note(ax.figure, f"{label(method)} coincides with {label(twin)} where drawn hollow")
    return methods


def _method_handles(methods: Iterable[str]) -> list[tuple[str, Line2D]]:
    """Legend entries in each method's own style, whatever panel it was drawn in."""
    out = []
    for m in ordered(methods):
        s = style(m)
        h = Line2D([], [], color=s.color, marker=s.marker, markersize=5, linewidth=1.4)
        if s.dashes:
            h.set_dashes(s.dashes)
        out.append((label(m), h))
    return out


def _dash_handles(title: str, dashes: Mapping[str, tuple]) -> list[tuple[str, Line2D]]:
    entries = [(title, Line2D([], [], linestyle="none"))]
    for name, d in dashes.items():
        h = Line2D([], [], color="0.3", linewidth=1.4)
        if d:
            h.set_dashes(d)
        entries.append((name, h))
    return entries


def _legend(fig: plt.Figure, entries: list[tuple[str, Any]]) -> None:
    for ax in fig.axes:
        if ax.get_legend():
            ax.get_legend().remove()
    fig.tight_layout()
    fig.legend([h for _, h in entries], [t for t, _ in entries], loc="center left", bbox_to_anchor=(1.0, 0.5),
               frameon=False)


# ------------------------------------------------------------------------------------------------ axes
def _facets(df: pd.DataFrame) -> tuple[pd.Series, list[str]]:
    """One panel per (dataset, model): the papers compare methods within a network."""
    key = df["model"] + " / " + df["dataset"]
    return key, sorted(key.unique())


def _panel_grid(n: int, width: float = 4.5, height: float = 3.4) -> tuple[plt.Figure, list[plt.Axes]]:
    fig, axes = plt.subplots(1, n, figsize=(width * n, height), squeeze=False)
    return fig, list(axes[0])


def _density_axis(ax: plt.Axes, densities: Iterable[float]) -> None:
    """Log density, sparsest on the right as the papers read it, ticked at the densities run; one label text
    in every figure. With many densities every one is ticked and about MAX_DENSITY_LABELS are labelled."""
    ds = sorted({float(d) for d in densities}, reverse=True)
    step = max(1, -(-len(ds) // MAX_DENSITY_LABELS))
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xticks(ds, [f"{100 * d:.3g}%" if i % step == 0 else "" for i, d in enumerate(ds)])
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.set_xlabel("density (weights kept, log scale)")
    if not ax.xaxis_inverted():
        ax.invert_xaxis()


def _epoch_axis(ax: plt.Axes, last: int, label_: str = "epoch") -> None:
    """Integer epochs; on a log axis when training is long, so the first epochs, where structure moves,
    stay visible (symlog: linear up to epoch 1, so epoch 0, the structure at init, stays on the axis)."""
    if last > 20:
        ax.set_xscale("symlog", linthresh=1)
        ax.xaxis.set_major_formatter(plt.FormatStrFormatter("%g"))
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(label_ + (", log scale" if last > 20 else ""))


def _nearest(df: pd.DataFrame, density: float | None) -> tuple[pd.DataFrame, float]:
    """Rows at the configured density (or the lowest one present), matched to 4 significant digits."""
    densities = sorted(df["density"].unique())
    target = min(densities) if density is None else min(densities, key=lambda d: abs(d - density))
    return df[df["density"] == target], target


def _by_method(df: pd.DataFrame, x: str, y: str, width: float = 4.5, density_axis: bool = False,
               **axes_set: Any) -> plt.Figure:
    """One panel per network, one line per method; `axes_set` styles each panel, its title may use {panel}."""
    key, panels = _facets(df)
    fig, axes = _panel_grid(len(panels), width=width)
    title = axes_set.pop("title", "{panel}")
    for ax, panel in zip(axes, panels):
        rows = df[key == panel]
        _methods(ax, rows, x, y)
        ax.set(title=title.format(panel=panel), **axes_set)
        if density_axis:
            _density_axis(ax, rows[x].unique())
    _legend(fig, _method_handles(df["method"].unique()))
    return fig


# ------------------------------------------------------------------------------------------------- PHEW
@figure("accuracy_vs_density")
def accuracy_vs_density(runs: pd.DataFrame) -> plt.Figure:
    """Final test accuracy against density per method, mean ± std over seeds, log-x (PHEW Fig. 2).
    Diverged runs (no accuracy) are left out, and counted under the figure."""
    diverged = runs["diverged"].astype(bool) if "diverged" in runs else pd.Series(False, index=runs.index)
    shown = runs[~diverged] if not diverged.all() else runs  # all diverged: empty panels, still one per network
    fig = _by_method(shown, "density", "final_test_acc", density_axis=True, ylabel="test accuracy")
    if diverged.any():
        lost = runs[diverged].drop_duplicates(["model", "method"])
        which = ", ".join(sorted(f"{r.model}/{r.method}" for r in lost.itertuples()))
        _note(fig, f"{int(diverged.sum())} diverged run(s) not shown ({which})")  # in the caption line
    return fig


@figure("layer_widths")
def layer_widths(layers: pd.DataFrame, density: float | None = None) -> plt.Figure:
    """Per-layer width (units with kept inputs and outputs, as a fraction of the layer's units) per method:
    SynFlow-L2's bottlenecks against PHEW's wide layers (PHEW Fig. 4)."""
    layers, target = _nearest(layers, density)
    fig = _by_method(layers, "layer_index", "width_ratio", width=6, title=f"{{panel}}, density {target:.4g}",
                     xlabel="prunable layer (input → output)", ylabel="width (fraction of units alive)",
                     ylim=(0, 1.05))
    key, panels = _facets(layers)
    for ax, panel in zip(fig.axes, panels):
        _layer_axis(ax, layers[key == panel])
    fig.tight_layout()  # the rotated layer names need room
    return fig


def _layer_axis(ax: plt.Axes, rows: pd.DataFrame) -> None:
    """Each prunable layer ticked with its name (".weight" dropped); with many layers, grouped by stage (the
    name's first part: conv1, layer1, ..., fc), the stages shaded in turn and named along the top."""
    if "layer" not in rows:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        return
    names = rows.drop_duplicates("layer_index").sort_values("layer_index")
    index, full = names["layer_index"].tolist(), [str(n).removesuffix(".weight") for n in names["layer"]]
    stages = [n.split(".", 1)[0] for n in full]
    grouped = len(full) > 8 and len(set(stages)) < len(full)
    ticks = [n.split(".", 1)[1] if grouped and "." in n else n for n in full]
    ax.set_xticks(index, ticks, rotation=90, fontsize=6 if len(full) > 12 else 7)
    if not grouped:
        return
    for i, stage in enumerate(dict.fromkeys(stages)):
        at = [x for x, s in zip(index, stages) if s == stage]
        if i % 2:
            ax.axvspan(min(at) - 0.5, max(at) + 0.5, color="0.93", zorder=0, linewidth=0)
        ax.text((min(at) + max(at)) / 2, 1.0, stage, transform=ax.get_xaxis_transform(), ha="center", va="bottom",
                fontsize=7, color="0.3")
    ax.set_title(ax.get_title(), pad=12)
    ax.set_xlabel("prunable layer, by stage (input → output)")


@figure("path_kernel")
def path_kernel(runs: pd.DataFrame) -> plt.Figure:
    """Path-kernel trace of the network as training starts against density per method, log-y (PHEW Fig. 3)."""
    return _by_method(runs, "density", "init_path_kernel_trace", density_axis=True, yscale="log",
                      ylabel="path-kernel trace Tr(Π)")


@figure("train_loss")
def train_loss(epochs: pd.DataFrame, density: float | None = None, first: int = 20) -> plt.Figure:
    """Training loss over the first epochs per method at one density: who converges fastest (PHEW Fig. 5)."""
    epochs, target = _nearest(epochs, density)
    epochs = epochs[epochs["epoch"] <= first]
    fig = _by_method(epochs, "epoch", "train_loss", title=f"{{panel}}, density {target:.4g}", ylabel="training loss")
    for ax in fig.axes:
        _epoch_axis(ax, int(epochs["epoch"].max()))
    return fig


# ------------------------------------------------------------------ Deconstructing the structure of sparse nets
def _unfrozen(runs: pd.DataFrame) -> pd.Series:
    """Runs whose structure was not frozen part-way (the freezing study's runs carry a freeze_epoch)."""
    return runs["freeze_epoch"].isna() if "freeze_epoch" in runs else pd.Series(True, index=runs.index)


WEIGHTS = {"own weights": (), "fresh weights (reinit)": (4, 2)}
C4_PANELS = (  # (title, methods) of claim C4's two comparisons, on re-initialised runs only (sparsenets.claims.c4)
    ("C4 (a): IMP vs random wiring with\nIMP's layer counts, fresh weights", ("imp", "random-like-imp")),
    ("C4 (b): DNW and RigL vs random,\nfresh weights", ("random", "dnw", "rigl")),
)


@figure("reinit")
def reinit(runs: pd.DataFrame) -> plt.Figure:
    """Per network: every method's structure trained with its own weights (solid) and again from fresh ones
    (dashed), then claim C4's two comparisons as C4 tests them, fresh weights only: (a) IMP against random-like-IMP,
    (b) DNW and RigL against random; mean ± std over seeds (Deconstructing Fig. 1)."""
    runs = runs[_unfrozen(runs)]
    runs = runs.assign(weights=runs["variant"].map({ORIGINAL: "own weights", "reinit": "fresh weights (reinit)"}))
    key, networks = _facets(runs)
    fig, grid = plt.subplots(len(networks), 1 + len(C4_PANELS), figsize=(4.2 * (1 + len(C4_PANELS)),
                             3.6 * len(networks)), squeeze=False)
    for row, network in zip(grid, networks):
        rows = runs[key == network]
        _methods(row[0], rows, "density", "final_test_acc", by="weights", dashes=WEIGHTS)
        row[0].set(title=f"{network}\nown (solid) vs fresh weights (dashed)", ylabel="test accuracy")
        fresh = rows[rows["variant"] == "reinit"]
        for ax, (title, methods) in zip(row[1:], C4_PANELS):
            _c4_panel(ax, fresh, methods, title)
        for ax in row:
            _density_axis(ax, rows["density"].unique())
    _legend(fig, _method_handles(runs["method"].unique()) + _dash_handles("trained from", WEIGHTS))
    return fig


def _c4_panel(ax: plt.Axes, fresh: pd.DataFrame, methods: tuple[str, ...], title: str) -> None:
    """One of C4's comparisons; a method without re-initialised runs is named in the panel (C4 cannot test it)."""
    shown = fresh[fresh["method"].isin(methods)]
    if len(shown):
        _methods(ax, shown, "density", "final_test_acc", dashes=None)
    absent = [m for m in methods if m not in set(shown["method"])]
    if absent:
        ax.text(0.5, 0.5, "no re-initialised runs of\n" + ", ".join(map(label, absent)) + "\n(C4 cannot test this)",
                transform=ax.transAxes, ha="center", va="center", fontsize=8, color="0.35")
    ax.set(title=title, ylabel="test accuracy")


BN = {"stale": (), "recalibrated": (4, 2)}


@figure("sensitivity")
def sensitivity(sens: pd.DataFrame, density: float | None = None) -> plt.Figure:
    """Test accuracy as a further fraction of the kept weights is removed, by magnitude and at random (one global
    ranking; the per-layer reading is in the table and the claims), with stale and recalibrated BN statistics,
    mean ± std over seeds (Deconstructing Fig. 2)."""
    if "ranking" in sens:
        sens = sens[sens["ranking"] == "global"]
    sens, target = _nearest(sens, density)
    sens = sens.assign(**{"BN statistics": sens["bn_recalibrated"].map({False: "stale", True: "recalibrated"})})
    key, networks = _facets(sens)
    modes = {"magnitude": "smallest magnitude first", "random": "at random"}
    fig, grid = plt.subplots(len(networks), len(modes), figsize=(9, 3.4 * len(networks)), squeeze=False,
                             sharey="row")
    for row, network in zip(grid, networks):
        for ax, (mode, how) in zip(row, modes.items()):
            _methods(ax, sens[(key == network) & (sens["mode"] == mode)], "fraction", "test_acc", by="BN statistics",
                     dashes=BN)
            ax.set(title=f"{network}, density {target:.4g}\npruned {how}",
                   xlabel="further fraction of kept weights removed", ylabel="test accuracy")
    _legend(fig, _method_handles(sens["method"].unique()) + _dash_handles("BN statistics", BN))
    return fig


RUN = ["dataset", "model", "variant", "seed"]  # what tells runs apart once method and density are fixed
QUINTILES = ["lowest 20%", "20–40%", "40–60%", "60–80%", "highest 20%"]
OVERLAPS = {"overlap_final": ("final structure", "#2ca02c"), "overlap_prev": ("previous epoch", "#4d4d4d")}


@figure("indegree")
def indegree(indeg: pd.DataFrame, overlap: pd.DataFrame, density: float | None = None) -> plt.Figure:
    """DNW's structure over training (Deconstructing Fig. 3). Left: mean in-degree of each layer's units
    grouped by their in-degree quintile after the first epoch, relative to the layer's mean, mean ± std
    over seeds. Right: the share of each epoch's kept weights the final structure keeps, and the share of
    the previous epoch's kept weights each epoch keeps."""
    indeg, target = _nearest(indeg[indeg["method"] == "dnw"], density)
    overlap = overlap[(overlap["method"] == "dnw") & (overlap["density"] == target)]
    curves = _indegree_by_first_rank(indeg)
    key, networks = _facets(curves)
    line_key = overlap["model"] + " / " + overlap["dataset"]
    fig, grid = plt.subplots(len(networks), 2, figsize=(11, 3.6 * len(networks)), squeeze=False)
    last = int(indeg["epoch"].max())
    colors = dict(zip(QUINTILES, sns.color_palette("viridis", len(QUINTILES))))
    for (left, right), network in zip(grid, networks):
        for quintile, color in colors.items():
            rows = curves[(key == network) & (curves["after epoch 1"] == quintile)]
            if len(rows):
                _line(left, rows, "epoch", "relative", color=color, marker="o", label_=quintile, gid=quintile)
        left.set(title=f"{network}, DNW at density {target:.4g}: in-degree of units",
                 ylabel="in-degree / layer mean")
        for column, (name, color) in OVERLAPS.items():
            rows = overlap[line_key == network].dropna(subset=[column])
            if len(rows):
                _line(right, rows, "epoch", column, color=color, marker="o", label_=name, gid=column)
        right.set(title=f"{network}, DNW at density {target:.4g}: structure overlap",
                  ylabel="shared fraction of kept weights", ylim=(0, 1.02))
        for ax, title in ((left, "units by in-degree after epoch 1"), (right, "overlap with")):
            _epoch_axis(ax, last, "epoch (0: at init)")
            ax.legend(title=title, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    fig.tight_layout()
    return fig


def _indegree_by_first_rank(indeg: pd.DataFrame) -> pd.DataFrame:
    """Per run, epoch and quintile: the mean in-degree (relative to its layer's mean that epoch) of the
    units in that quintile of their layer after epoch 1 (the paper's ranking; epoch 0 is the structure
    at init); ties are split by unit index."""
    first = indeg[indeg["epoch"] == (1 if (indeg["epoch"] == 1).any() else indeg["epoch"].min())]
    rank = first.groupby(RUN + ["layer"])["in_degree"].rank(method="first", pct=True)
    quintile = pd.cut(rank, [i / 5 for i in range(6)], labels=QUINTILES)
    groups = first[RUN + ["layer", "unit"]].assign(**{"after epoch 1": quintile})
    df = indeg.merge(groups, on=RUN + ["layer", "unit"])
    layer_mean = df.groupby(RUN + ["layer", "epoch"])["in_degree"].transform("mean")
    df["relative"] = df["in_degree"] / layer_mean.where(layer_mean > 0)
    return df.groupby(RUN + ["epoch", "after epoch 1"], as_index=False, observed=True)["relative"].mean()


@figure("freezing")
def freezing(runs: pd.DataFrame, density: float | None = None) -> plt.Figure:
    """Test accuracy of DNW with its structure frozen after k epochs against k, mean ± std over seeds, with
    full DNW (structure free all along) as the reference line (Deconstructing Fig. 4). Frozen runs are
    the rows with a freeze_epoch, whatever their method is called."""
    frozen, target = _nearest(runs[~_unfrozen(runs)], density)
    full = runs[(runs["method"] == "dnw") & _unfrozen(runs) & (runs["density"] == target)
                & (runs["variant"] == ORIGINAL)]
    key, networks = _facets(frozen)
    full_key = full["model"] + " / " + full["dataset"]
    fig, axes = _panel_grid(len(networks), width=6)
    ks = sorted(frozen["freeze_epoch"].unique())
    frozen_style, dnw = style("dnw-freezeK"), style("dnw")
    entries = [("DNW, structure frozen after k epochs",
                Line2D([], [], color=frozen_style.color, marker=frozen_style.marker, markersize=5))]
    for ax, network in zip(axes, networks):
        _line(ax, frozen[key == network], "freeze_epoch", "final_test_acc", color=frozen_style.color,
              marker=frozen_style.marker, gid="dnw-freeze")
        reference = full.loc[full_key == network, "final_test_acc"]
        if len(reference):
            mean = reference.mean()
            ax.axhline(mean, color=dnw.color, linestyle="--", linewidth=1.4, gid="dnw")
            if len(reference) > 1:
                std = reference.std()
                ax.axhspan(mean - std, mean + std, color=dnw.color, alpha=BAND_ALPHA, linewidth=0)
                fig.sparsenets_band = True
        ax.set_xscale("symlog", linthresh=1, linscale=0.5)
        ax.set_xticks(ks, [f"{k:g}" for k in ks])
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.set_xlim(left=-0.2)  # symlog's default margin leaves an empty negative decade
        ax.set(title=f"{network}, density {target:.4g}", xlabel="epochs k of DNW before freezing (log scale)",
               ylabel="test accuracy")
    if len(full):
        entries.append(("full DNW (structure never frozen)", Line2D([], [], color=dnw.color, linestyle="--")))
    _legend(fig, entries)
    return fig
