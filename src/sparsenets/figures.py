"""The papers' figures: tidy tables in, one seaborn figure out (PNG and PDF), one function each."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

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
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.stem}.", suffix=out.suffix)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=150, bbox_inches="tight", format=out.suffix.lstrip("."))
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _facets(df: pd.DataFrame) -> tuple[pd.Series, list[str]]:
    """One panel per (dataset, model): the papers compare methods within a network."""
    key = df["model"] + " / " + df["dataset"]
    return key, sorted(key.unique())


def _panel_grid(n: int, width: float = 4.5, height: float = 3.4) -> tuple[plt.Figure, list[plt.Axes]]:
    fig, axes = plt.subplots(1, n, figsize=(width * n, height), squeeze=False)
    return fig, list(axes[0])


def _method_palette(methods: list[str]) -> dict[str, Any]:
    return dict(zip(sorted(methods), sns.color_palette("tab10", len(methods))))


@figure("accuracy_vs_density")
def accuracy_vs_density(runs: pd.DataFrame) -> plt.Figure:
    """Final test accuracy against density per method, mean ± std over seeds, log-x (PHEW Fig. 2)."""
    key, panels = _facets(runs)
    fig, axes = _panel_grid(len(panels))
    palette = _method_palette(list(runs["method"].unique()))
    for ax, panel in zip(axes, panels):
        sns.lineplot(data=runs[key == panel], x="density", y="final_test_acc", hue="method", palette=palette,
                     errorbar="sd", marker="o", ax=ax)
        ax.set(xscale="log", title=panel, xlabel="density (kept fraction of weights)", ylabel="test accuracy")
        ax.invert_xaxis()
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


@figure("layer_widths")
def layer_widths(layers: pd.DataFrame, density: float | None = None) -> plt.Figure:
    """Per-layer width (units with kept inputs and outputs, as a fraction of the layer's units) per method:
    SynFlow-L2's bottlenecks against PHEW's wide layers (PHEW Fig. 4)."""
    layers, target = _nearest(layers, density)
    key, panels = _facets(layers)
    fig, axes = _panel_grid(len(panels), width=6)
    palette = _method_palette(list(layers["method"].unique()))
    for ax, panel in zip(axes, panels):
        sns.lineplot(data=layers[key == panel], x="layer_index", y="width_ratio", hue="method", palette=palette,
                     errorbar="sd", marker="o", ax=ax)
        ax.set(title=f"{panel}, density {target:.4g}", xlabel="prunable layer (input → output)",
               ylabel="width (fraction of units alive)", ylim=(0, 1.05))
    _one_legend(fig, axes)
    return fig


@figure("path_kernel")
def path_kernel(runs: pd.DataFrame) -> plt.Figure:
    """Path-kernel trace of the initial mask against density per method, log-y (PHEW Fig. 3)."""
    key, panels = _facets(runs)
    fig, axes = _panel_grid(len(panels))
    palette = _method_palette(list(runs["method"].unique()))
    for ax, panel in zip(axes, panels):
        sns.lineplot(data=runs[key == panel], x="density", y="path_kernel_trace", hue="method", palette=palette,
                     errorbar="sd", marker="o", ax=ax)
        ax.set(xscale="log", yscale="log", title=panel, xlabel="density", ylabel="path-kernel trace Tr(Π)")
        ax.invert_xaxis()
    _one_legend(fig, axes)
    return fig


@figure("train_loss")
def train_loss(epochs: pd.DataFrame, density: float | None = None, first: int = 20) -> plt.Figure:
    """Training loss over the first epochs per method at one density: who converges fastest (PHEW Fig. 5)."""
    epochs, target = _nearest(epochs, density)
    epochs = epochs[epochs["epoch"] <= first]
    key, panels = _facets(epochs)
    fig, axes = _panel_grid(len(panels))
    palette = _method_palette(list(epochs["method"].unique()))
    for ax, panel in zip(axes, panels):
        sns.lineplot(data=epochs[key == panel], x="epoch", y="train_loss", hue="method", palette=palette,
                     errorbar="sd", marker="o", ax=ax)
        ax.set(title=f"{panel}, density {target:.4g}", xlabel="epoch", ylabel="training loss")
    _one_legend(fig, axes)
    return fig
