"""Tables for a paper: per study, final test accuracy as a method × density table, mean over seeds with its
95 % t-interval (sparsenets.stats, as the claims use), and the seeds each cell is over.

Two files per table, in results/{study}/tables/: `{name}.csv`, one row per cell (network, weights, method,
density: mean, ci_low, ci_high, half_width, n_seeds, seeds; accuracy as a fraction), to re-plot or re-format;
and `{name}.tex`, one booktabs `table` per network (methods down, densities across, accuracy in %: mean ± the
interval's half-width), to `\\input` into a paper whose preamble has `\\usepackage{booktabs}`. Runs trained
again from fresh weights (reinit) are a second block; runs whose structure was frozen part-way and diverged
runs (no accuracy) are left out, and the caption says how many diverged. No torch, no matplotlib.
"""
from __future__ import annotations

import math
import os
from typing import Any, Iterable, Sequence

import pandas as pd

from . import stats
from .io import write_text
from .labels import label
from .styles import ordered

COLUMNS = ["network", "weights", "method", "label", "density", "mean", "ci_low", "ci_high", "half_width", "n_seeds",
           "seeds"]
WEIGHTS = {"original": "own weights", "reinit": "fresh weights (reinit)"}
QUANTITY = "final_test_acc"


def cells(runs: pd.DataFrame, quantity: str = QUANTITY) -> pd.DataFrame:
    """One row per (network, weights, method, density): the mean over seeds and its 95 % t-interval."""
    missing = [c for c in ("model", "dataset", "method", "density", "seed", quantity) if c not in runs]
    if missing:
        raise ValueError(f"paper table: the runs table has no column {', '.join(missing)}; rebuild it with "
                         f"`python -m sparsenets table --kind runs`")
    runs = _kept(runs)
    rows = []
    for (model, dataset, variant), group in runs.groupby(["model", "dataset", "variant"], sort=True):
        for method in ordered(group["method"].unique()):
            for density in sorted(group.loc[group["method"] == method, "density"].unique(), reverse=True):
                part = group[(group["method"] == method) & (group["density"] == density)]
                values = {int(s): float(v) for s, v in zip(part["seed"], part[quantity]) if pd.notna(v)}
                iv = stats.t_interval(values)
                rows.append({"network": f"{model} / {dataset}", "weights": WEIGHTS.get(variant, variant),
                             "method": method, "label": label(method), "density": float(density), "mean": iv.mean,
                             "ci_low": iv.low, "ci_high": iv.high, "half_width": iv.half_width,
                             "n_seeds": iv.n, "seeds": " ".join(map(str, sorted(values)))})
    return pd.DataFrame(rows, columns=COLUMNS)


def _kept(runs: pd.DataFrame) -> pd.DataFrame:
    """Runs of the table: structure never frozen part-way, variant original or reinit."""
    runs = runs.copy()
    runs["variant"] = runs["variant"].fillna("original") if "variant" in runs else "original"
    if "freeze_epoch" in runs:
        runs = runs[runs["freeze_epoch"].isna()]
    return runs[runs["variant"].isin(list(WEIGHTS))]


def diverged(runs: pd.DataFrame) -> int:
    return int(runs["diverged"].astype(bool).sum()) if "diverged" in runs else 0


# ------------------------------------------------------------------------------------------------- LaTeX
_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
        "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def tex_escape(text: Any) -> str:
    return "".join(_TEX.get(ch, ch) for ch in str(text))


def _cell(row: pd.Series | None, top: int) -> str:
    """Accuracy in %: "61.2 $\\pm$ 1.3"; fewer seeds than the table's most get a superscript n."""
    if row is None or row["n_seeds"] == 0 or math.isnan(row["mean"]):
        return "--"
    text = f"{100 * row['mean']:.1f}"
    if row["n_seeds"] > 1 and not math.isnan(row["half_width"]):
        text += rf" $\pm$ {100 * row['half_width']:.1f}"
    if row["n_seeds"] < top:
        text += rf"\textsuperscript{{n={int(row['n_seeds'])}}}"
    return text


def _percent(density: float) -> str:
    return f"{100 * density:.3g}"


def tex_table(table: pd.DataFrame, network: str, study: str, preset: str, n_diverged: int = 0) -> str:
    """One booktabs table: a row per method (a block per kind of weights), a column per density."""
    part = table[table["network"] == network]
    densities = sorted(part["density"].unique(), reverse=True)
    top = int(part["n_seeds"].max()) if len(part) else 0
    seeds = sorted({s for ss in part["seeds"] for s in str(ss).split()}, key=int)
    spec = "l" + "r" * len(densities)
    lines = [r"\begin{table}[t]", r"\centering", r"\small",
             rf"\caption{{{_caption(study, network, preset, top, seeds, n_diverged)}}}",
             rf"\label{{tab:{_label_key(study, network)}}}", rf"\begin{{tabular}}{{{spec}}}", r"\toprule",
             rf"Method & \multicolumn{{{len(densities)}}}{{c}}{{Density (\% of weights kept)}} \\",
             rf"\cmidrule(lr){{2-{len(densities) + 1}}}",
             " & " + " & ".join(_percent(d) for d in densities) + r" \\"]
    blocks = list(dict.fromkeys(part["weights"]))
    for weights in blocks:
        lines.append(r"\midrule")
        rows = part[part["weights"] == weights]
        if len(blocks) > 1:
            lines.append(rf"\multicolumn{{{len(densities) + 1}}}{{l}}{{\emph{{{tex_escape(weights)}}}}} \\")
        for method in dict.fromkeys(rows["method"]):
            mine = rows[rows["method"] == method].set_index("density")
            cells_ = [_cell(mine.loc[d] if d in mine.index else None, top) for d in densities]
            lines.append(f"{tex_escape(label(method))} & " + " & ".join(cells_) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines)


def _caption(study: str, network: str, preset: str, top: int, seeds: Sequence[str], n_diverged: int) -> str:
    over = (f"mean $\\pm$ 95\\,\\% t-interval half-width over {top} seeds ({', '.join(seeds)})" if top > 1
            else "one seed, so no interval")
    text = (f"Final test accuracy (\\%) on {tex_escape(network)}, study {tex_escape(study)}, preset "
            f"{tex_escape(preset)}: {over}.")
    if n_diverged:
        text += f" {n_diverged} diverged run(s) left out."
    return text


def _label_key(study: str, network: str) -> str:
    return "-".join("".join(c if c.isalnum() else "-" for c in p.strip()) for p in (study, *network.split("/")))


def tex(table: pd.DataFrame, study: str, preset: str, n_diverged: int = 0) -> str:
    head = [f"% Generated by `python -m sparsenets paper-table` (study {study}, preset {preset}).",
            r"% \input{} it into a document whose preamble has \usepackage{booktabs}."]
    body = [tex_table(table, n, study, preset, n_diverged) for n in dict.fromkeys(table["network"])]
    return "\n".join(head) + "\n\n" + "\n\n".join(body) + "\n"


def write(runs_csv: str | os.PathLike, csv_out: str | os.PathLike, tex_out: str | os.PathLike, *, study: str,
          preset: str) -> pd.DataFrame:
    """Read the study's runs table, write the CSV and the LaTeX (each whole or not at all)."""
    try:
        runs = pd.read_csv(runs_csv)
    except pd.errors.EmptyDataError:
        runs = pd.DataFrame(columns=["model", "dataset", "method", "density", "seed", QUANTITY])
    table = cells(runs)
    write_text(csv_out, table.to_csv(index=False, float_format="%.6g"))
    write_text(tex_out, tex(table, study, preset, diverged(runs)))
    return table


def matrix(table: pd.DataFrame, network: str, weights: str) -> tuple[list[float], list[tuple[str, list[str]]]]:
    """The HTML report's view of one block: densities, and per method its cells as "61.2 ± 1.3" (in %)."""
    part = table[(table["network"] == network) & (table["weights"] == weights)]
    densities = sorted(part["density"].unique(), reverse=True)
    out = []
    for method in dict.fromkeys(part["method"]):
        mine = part[part["method"] == method].set_index("density")
        out.append((label(method), [_plain(mine.loc[d]) if d in mine.index else "–" for d in densities]))
    return densities, out


def _plain(row: pd.Series) -> str:
    if row["n_seeds"] == 0 or math.isnan(row["mean"]):
        return "–"
    hw = f" ± {100 * row['half_width']:.1f}" if row["n_seeds"] > 1 and not math.isnan(row["half_width"]) else ""
    return f"{100 * row['mean']:.1f}{hw}"


def networks(table: pd.DataFrame) -> Iterable[tuple[str, str]]:
    return list(dict.fromkeys(zip(table["network"], table["weights"])))


__all__ = ["cells", "matrix", "networks", "tex", "tex_escape", "write"]
