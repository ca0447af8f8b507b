"""The papers' figures: tidy tables in, one seaborn figure out (PNG and PDF), one function each."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from .io import atomic_path  # noqa: E402
from .labels import label  # noqa: E402

FigureFn = Callable[..., plt.Figure]
FIGURES: dict[str, FigureFn] = {}


def figure(name: str) -> Callable[[FigureFn], FigureFn]:
    def deco(fn: FigureFn) -> FigureFn:
        FIGURES[name] = fn
        return fn

    return deco


def draw(name: str, tables: list[str], outs: list[str], **options: Any) -> None:
    """Read the tidy tables, draw figure `name`, save it to every path in `outs` atomically."""
    if name not in FIGURES:
        raise ValueError(f"unknown figure {name!r}; known: {', '.join(sorted(FIGURES))}")
    frames = [pd.read_csv(t) for t in tables]
    sns.set_theme(context="paper", style="whitegrid", font_scale=1.1)
    fig = FIGURES[name](*frames, **options)
    for out in outs:
        save(fig, out)
    plt.close(fig)


def save(fig: plt.Figure, out: str | os.PathLike) -> None:
    """Whole or not at all (io.atomic_path); the format comes from `out`'s suffix, not the temporary name's."""
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=150, bbox_inches="tight", format=Path(out).suffix.lstrip("."))


def _facets(df: pd.DataFrame) -> tuple[pd.Series, list[str]]:
    """One panel per (dataset, model): the papers compare methods within a network."""
    key = df["model"] + " / " + df["dataset"]
    return key, sorted(key.unique())


def _panel_grid(n: int, width: float = 4.5, height: float = 3.4) -> tuple[plt.Figure, list[plt.Axes]]:
    fig, axes = plt.subplots(1, n, figsize=(width * n, height), squeeze=False)
    return fig, list(axes[0])


def _method_palette(methods: list[str]) -> dict[str, Any]:
    return dict(zip(sorted(methods), sns.color_palette("tab10", len(methods))))


def _labelled(df: pd.DataFrame) -> pd.DataFrame:
    """Methods under their display names (sparsenets.labels), so every legend reads e.g. "magnitude at init"."""
    return df.assign(method=df["method"].map(label))


def _by_method(df: pd.DataFrame, x: str, y: str, width: float = 4.5, **axes_set: Any) -> plt.Figure:
    """One panel per network, one line per method (mean ± std over seeds); `axes_set` styles each panel,
    its title may use {panel}."""
    df = _labelled(df)
    key, panels = _facets(df)
    fig, axes = _panel_grid(len(panels), width=width)
    palette = _method_palette(list(df["method"].unique()))
    title = axes_set.pop("title", "{panel}")
    for ax, panel in zip(axes, panels):
        sns.lineplot(data=df[key == panel], x=x, y=y, hue="method", palette=palette, errorbar="sd", marker="o", ax=ax)
        ax.set(title=title.format(panel=panel), **axes_set)
        if axes_set.get("xscale") == "log":
            ax.invert_xaxis()  # sparsest on the right, as the papers read it
    _one_legend(fig, axes)
    return fig


def _one_legend(fig: plt.Figure, axes: list[plt.Axes]) -> None:
    handles, labels = axes[0].get_legend_handles_labels()
    for ax in axes:
        if ax.get_legend():
            ax.get_legend().remove()
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    fig.tight_layout()


def _nearest(df: pd.DataFrame, density: float | None) -> tuple[pd.DataFrame, float]:
    """Rows at the configured density (or the lowest one present), matched to 4 significant digits."""
    densities = sorted(df["density"].unique())
    target = min(densities) if density is None else min(densities, key=lambda d: abs(d - density))
    return df[df["density"] == target], target


@figure("accuracy_vs_density")
def accuracy_vs_density(runs: pd.DataFrame) -> plt.Figure:
    """Final test accuracy against density per method, mean ± std over seeds, log-x (PHEW Fig. 2)."""
    return _by_method(runs, "density", "final_test_acc", xscale="log", xlabel="density (kept fraction of weights)",
                      ylabel="test accuracy")


@figure("layer_widths")
def layer_widths(layers: pd.DataFrame, density: float | None = None) -> plt.Figure:
    """Per-layer width (units with kept inputs and outputs, as a fraction of the layer's units) per method:
    SynFlow-L2's bottlenecks against PHEW's wide layers (PHEW Fig. 4)."""
    layers, target = _nearest(layers, density)
    fig = _by_method(layers, "layer_index", "width_ratio", width=6, title=f"{{panel}}, density {target:.4g}",
                     xlabel="prunable layer (input → output)", ylabel="width (fraction of units alive)",
                     ylim=(0, 1.05))
    for ax in fig.axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return fig


@figure("path_kernel")
def path_kernel(runs: pd.DataFrame) -> plt.Figure:
    """Path-kernel trace of the network as training starts against density per method, log-y (PHEW Fig. 3)."""
    return _by_method(runs, "density", "init_path_kernel_trace", xscale="log", yscale="log", xlabel="density",
                      ylabel="path-kernel trace Tr(Π)")


@figure("train_loss")
def train_loss(epochs: pd.DataFrame, density: float | None = None, first: int = 20) -> plt.Figure:
    """Training loss over the first epochs per method at one density: who converges fastest (PHEW Fig. 5)."""
    epochs, target = _nearest(epochs, density)
    return _by_method(epochs[epochs["epoch"] <= first], "epoch", "train_loss",
                      title=f"{{panel}}, density {target:.4g}", xlabel="epoch", ylabel="training loss")


# ------------------------------------------------------------------ Deconstructing the structure of sparse nets
def _unfrozen(runs: pd.DataFrame) -> pd.Series:
    """Runs whose structure was not frozen part-way (the freezing study's runs carry a freeze_epoch)."""
    return runs["freeze_epoch"].isna() if "freeze_epoch" in runs else pd.Series(True, index=runs.index)


def _log_density_axis(ax: plt.Axes, densities: list[float]) -> None:
    """Log density, sparsest on the right as the papers read it, ticked at the densities trained."""
    ax.set_xscale("log")
    ax.set_xticks(densities, [f"{100 * d:.3g}%" for d in densities])
    ax.minorticks_off()
    ax.set_xlabel("density (weights kept, log scale)")
    if not ax.xaxis_inverted():
        ax.invert_xaxis()


@figure("reinit")
def reinit(runs: pd.DataFrame) -> plt.Figure:
    """Test accuracy against density per method, each structure trained from its own weights (solid) and
    from fresh ones (dashed), mean ± std over seeds (Deconstructing Fig. 1)."""
    runs = _labelled(runs[_unfrozen(runs)]).rename(columns={"variant": "weights"})
    runs["weights"] = runs["weights"].map({"original": "original", "reinit": "re-initialised"})
    key, panels = _facets(runs)
    fig, axes = _panel_grid(len(panels))
    palette = _method_palette(list(runs["method"].unique()))
    for ax, panel in zip(axes, panels):
        sns.lineplot(data=runs[key == panel], x="density", y="final_test_acc", hue="method", palette=palette,
                     style="weights", style_order=["original", "re-initialised"], dashes=["", (4, 2)],
                     errorbar="sd", marker="o", ax=ax)
        ax.set(title=panel, ylabel="test accuracy")
        _log_density_axis(ax, sorted(runs.loc[key == panel, "density"].unique()))
    _one_legend(fig, axes)
    return fig


@figure("sensitivity")
def sensitivity(sens: pd.DataFrame, density: float | None = None) -> plt.Figure:
    """Test accuracy as a further fraction of the kept weights is removed, by magnitude and at random, with
    stale and recalibrated BN statistics, mean ± std over seeds (Deconstructing Fig. 2)."""
    sens, target = _nearest(_labelled(sens), density)
    sens = sens.assign(**{"BN statistics": sens["bn_recalibrated"].map({False: "stale", True: "recalibrated"})})
    key, networks = _facets(sens)
    modes = {"magnitude": "smallest magnitude first", "random": "at random"}
    fig, grid = plt.subplots(len(networks), len(modes), figsize=(9, 3.4 * len(networks)), squeeze=False,
                             sharey="row")
    palette = _method_palette(list(sens["method"].unique()))
    for row, network in zip(grid, networks):
        for ax, (mode, how) in zip(row, modes.items()):
            sns.lineplot(data=sens[(key == network) & (sens["mode"] == mode)], x="fraction", y="test_acc",
                         hue="method", palette=palette, style="BN statistics", style_order=["stale", "recalibrated"],
                         errorbar="sd", marker="o", ax=ax)
            ax.set(title=f"{network}, density {target:.4g}\npruned {how}",
                   xlabel="further fraction of kept weights removed", ylabel="test accuracy")
    _one_legend(fig, list(grid.flat))
    return fig


RUN = ["dataset", "model", "variant", "seed"]  # what tells runs apart once method and density are fixed
QUINTILES = ["lowest 20%", "20–40%", "40–60%", "60–80%", "highest 20%"]


@figure("indegree")
def indegree(indeg: pd.DataFrame, overlap: pd.DataFrame, density: float | None = None) -> plt.Figure:
    """DNW's structure over training (Deconstructing Fig. 3). Left: mean in-degree of each layer's units
    grouped by their in-degree quintile after the first epoch, relative to the layer's mean, mean ± std
    over seeds. Right: the share of each epoch's kept weights the final structure keeps, and the share of
    the previous epoch's kept weights each epoch keeps."""
    indeg, target = _nearest(indeg[indeg["method"] == "dnw"], density)
    overlap = overlap[(overlap["method"] == "dnw") & (overlap["density"] == target)]
    curves = _indegree_by_first_rank(indeg)
    lines = overlap.melt(id_vars=RUN + ["epoch"], value_vars=["overlap_final", "overlap_prev"],
                         var_name="overlap with", value_name="overlap")
    lines["overlap with"] = lines["overlap with"].map({"overlap_final": "final structure",
                                                       "overlap_prev": "previous epoch"})
    key, networks = _facets(curves)
    line_key = lines["model"] + " / " + lines["dataset"]
    fig, grid = plt.subplots(len(networks), 2, figsize=(11, 3.6 * len(networks)), squeeze=False)
    last = int(indeg["epoch"].max())
    for (left, right), network in zip(grid, networks):
        sns.lineplot(data=curves[key == network], x="epoch", y="relative", hue="after epoch 1",
                     hue_order=QUINTILES, palette="viridis", errorbar="sd", ax=left)
        left.set(title=f"{network}, DNW at density {target:.4g}: in-degree of units",
                 ylabel="in-degree / layer mean")
        sns.lineplot(data=lines[line_key == network], x="epoch", y="overlap", hue="overlap with",
                     errorbar="sd", ax=right)
        right.set(title=f"{network}, DNW at density {target:.4g}: structure overlap",
                  ylabel="shared fraction of kept weights", ylim=(0, 1.02))
        for ax in (left, right):
            _epoch_axis(ax, last)
            sns.move_legend(ax, "upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
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


def _epoch_axis(ax: plt.Axes, last: int) -> None:
    """Epochs on a log axis when training is long, so the first epochs, where structure moves, stay visible."""
    if last > 20:  # symlog: linear up to epoch 1, so epoch 0 (the structure at init) stays on the axis
        ax.set_xscale("symlog", linthresh=1)
        ax.xaxis.set_major_formatter(plt.FormatStrFormatter("%g"))
    else:
        ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
    ax.set_xlabel("epoch (0: at init)" + (", log scale" if last > 20 else ""))


@figure("freezing")
def freezing(runs: pd.DataFrame, density: float | None = None) -> plt.Figure:
    """Test accuracy of DNW with its structure frozen after k epochs against k, mean ± std over seeds, with
    full DNW (structure free all along) as the reference band (Deconstructing Fig. 4). Frozen runs are
    the rows with a freeze_epoch, whatever their method is called."""
    frozen, target = _nearest(runs[~_unfrozen(runs)], density)
    full = runs[(runs["method"] == "dnw") & _unfrozen(runs) & (runs["density"] == target)
                & (runs["variant"] == "original")]
    key, networks = _facets(frozen)
    full_key = full["model"] + " / " + full["dataset"]
    fig, axes = _panel_grid(len(networks), width=6)
    ks = sorted(frozen["freeze_epoch"].unique())
    for ax, network in zip(axes, networks):
        sns.lineplot(data=frozen[key == network], x="freeze_epoch", y="final_test_acc", errorbar="sd", marker="o",
                     color="C0", label="DNW, structure frozen after k epochs", ax=ax)
        reference = full.loc[full_key == network, "final_test_acc"]
        if len(reference):
            mean = reference.mean()
            std = reference.std() if len(reference) > 1 else 0.0
            ax.axhline(mean, color="0.3", linestyle="--", label="full DNW (mean ± std)")
            ax.axhspan(mean - std, mean + std, color="0.3", alpha=0.15, linewidth=0)
        ax.set_xscale("symlog", linthresh=1, linscale=0.5)
        ax.set_xticks(ks, [f"{k:g}" for k in ks])
        ax.set_xlim(left=-0.2)  # symlog's default margin leaves an empty negative decade
        ax.set(title=f"{network}, density {target:.4g}", xlabel="epochs k of DNW before freezing (symlog)",
               ylabel="test accuracy")
    _one_legend(fig, axes)
    return fig
