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
