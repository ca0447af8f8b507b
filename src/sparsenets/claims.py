"""The claims a run is judged by (PAPERS.md, C1–C7), each tested on the tidy tables of one network.

Each test's docstring is its exact definition; `write` prints them under the verdicts.
"""
from __future__ import annotations

import inspect
import os
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from .experiments import write_text

REPRODUCED, NOT_REPRODUCED, NOT_ENOUGH = "reproduced", "not reproduced", "not enough runs"
TOLERANCE = 0.01  # 1 percentage point of test accuracy
MOSTLY = 0.5  # the share of epoch 1's structure that must survive to the end for "mostly fixed"
MARKS = {REPRODUCED: "✅", NOT_REPRODUCED: "❌", NOT_ENOUGH: "⚪"}
RULES = (
    "Common rules: accuracies and traces are means over seeds; a test compares methods at the lowest "
    "density where every method it needs has runs (the papers' effects are strongest when sparse); only "
    "runs with their original weights and a structure never frozen part-way count, unless a test says "
    "otherwise. A network lacking the runs a test needs is *not enough runs*, never a guess. A claim gets "
    "one row per network it could be tested on: it may hold on one network and fail on another."
)

CLAIMS = {
    "C1": "SynFlow-L2 yields narrower (bottleneck) layers than PHEW at equal density.",
    "C2": "PHEW's path-kernel trace is far above random's and, on a log scale, nearer SynFlow-L2's than random's is.",
    "C3": "PHEW beats SynFlow and SynFlow-L2 in test accuracy at low densities.",
    "C4": "After reinit, IMP structures do about as well as random ones; DNW and RigL stay above random.",
    "C5": "Under further pruning by magnitude, random structures lose accuracy fastest.",
    "C6": "DNW's structure is mostly fixed after the first epoch.",
    "C7": "Freezing DNW's structure after a few epochs nearly matches full DNW.",
}


class Missing(Exception):
    """The tables lack runs a test needs; the message says which."""


@dataclass(frozen=True)
class Finding:
    holds: bool
    measured: str  # what a reader checks the verdict against
    numbers: dict[str, float] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------ helpers
def _unfrozen(df: pd.DataFrame) -> pd.DataFrame:
    """Runs whose structure was never frozen part-way (the freezing study's runs have a freeze_epoch)."""
    return df[df["freeze_epoch"].isna()] if "freeze_epoch" in df else df


def _plain(df: pd.DataFrame) -> pd.DataFrame:
    """Unfrozen runs with their original weights."""
    return _unfrozen(df[df["variant"] == "original"])


def _lowest_common_density(df: pd.DataFrame, methods: Sequence[str]) -> float:
    present = [set(df.loc[df["method"] == m, "density"]) for m in methods]
    absent = [m for m, densities in zip(methods, present) if not densities]
    if absent:
        raise Missing(f"no {', '.join(absent)} runs")
    common = set.intersection(*present)
    if not common:
        raise Missing(f"no density where {', '.join(methods)} all have runs")
    return min(common)


def _means(df: pd.DataFrame, column: str, methods: Sequence[str], density: float) -> dict[str, float]:
    at = df[df["density"] == density]
    return {m: float(at.loc[at["method"] == m, column].mean()) for m in methods}


def _listing(values: dict[str, float], fmt: str = ".3f") -> str:
    return ", ".join(f"{k} {v:{fmt}}" for k, v in values.items())


# ---------------------------------------------------------------------------------------- the tests
def c1(layers: pd.DataFrame) -> Finding:
    """At the lowest density where phew and synflow-l2 both have runs: the narrowest layer of a run
    (its minimum width_ratio, layers table) is narrower for synflow-l2 than for phew, means over seeds."""
    layers = _plain(layers)
    d = _lowest_common_density(layers, ["synflow-l2", "phew"])
    at = layers[(layers["density"] == d) & layers["method"].isin(["synflow-l2", "phew"])]
    narrowest = at.groupby(["method", "seed"])["width_ratio"].min().groupby("method").mean()
    w = {m: float(narrowest[m]) for m in ("synflow-l2", "phew")}
    return Finding(w["synflow-l2"] < w["phew"], f"narrowest layer's width at density {d:.4g}: {_listing(w)}",
                   {"density": d, **w})


def c2(runs: pd.DataFrame) -> Finding:
    """At the lowest density where phew, random and synflow-l2 all have runs, with T = mean over seeds of
    log10 init_path_kernel_trace (runs table: the trace of the network as training starts): T(phew) > T(random), and
    |T(phew) − T(synflow-l2)| < |T(random) − T(synflow-l2)|."""
    runs = _plain(runs)
    methods = ["phew", "random", "synflow-l2"]
    d = _lowest_common_density(runs, methods)
    with np.errstate(divide="ignore"):  # a net with no input-output path has trace 0: log10 = -inf
        runs = runs.assign(log_trace=np.log10(runs["init_path_kernel_trace"].astype(float)))
    t = _means(runs, "log_trace", methods, d)
    holds = t["phew"] > t["random"] and abs(t["phew"] - t["synflow-l2"]) < abs(t["random"] - t["synflow-l2"])
    return Finding(holds, f"log10 path-kernel trace at density {d:.4g}: {_listing(t, '.2f')}", {"density": d, **t})


def c3(runs: pd.DataFrame) -> Finding:
    """At the lowest density where phew, synflow and synflow-l2 all have runs: phew's mean final test
    accuracy is above both synflow's and synflow-l2's."""
    runs = _plain(runs)
    methods = ["phew", "synflow", "synflow-l2"]
    d = _lowest_common_density(runs, methods)
    acc = _means(runs, "final_test_acc", methods, d)
    holds = acc["phew"] > max(acc["synflow"], acc["synflow-l2"])
    return Finding(holds, f"test accuracy at density {d:.4g}: {_listing(acc)}", {"density": d, **acc})


def c4(runs: pd.DataFrame) -> Finding:
    """On re-initialised runs (variant reinit, structure never frozen), means over seeds: at every density
    where imp and random both have runs, |acc(imp) − acc(random)| ≤ max(1 pp, either method's std over
    seeds); and at the lowest density where random, dnw and rigl all have runs, acc(dnw) > acc(random)
    and acc(rigl) > acc(random)."""
    reinit = _unfrozen(runs[runs["variant"] == "reinit"])
    _lowest_common_density(reinit, ["imp", "random"])  # raises, naming what is missing
    stats = reinit[reinit["method"].isin(["imp", "random"])].groupby(["density", "method"])["final_test_acc"]
    mean, std = stats.mean().unstack().dropna(), stats.std().unstack().fillna(0.0)
    gap = (mean["imp"] - mean["random"]).abs()
    allowed = np.maximum(TOLERANCE, std.loc[gap.index].max(axis=1))
    worst = (gap - allowed).idxmax()
    d = _lowest_common_density(reinit, ["random", "dnw", "rigl"])
    acc = _means(reinit, "final_test_acc", ["random", "dnw", "rigl", "imp"], d)
    holds = bool((gap <= allowed).all()) and acc["dnw"] > acc["random"] and acc["rigl"] > acc["random"]
    measured = (f"largest gap imp − random {gap[worst]:.3f} (allowed {allowed[worst]:.3f}) at density {worst:.4g}; "
                f"at density {d:.4g}: {_listing(acc)}")
    return Finding(holds, measured, {"density": d, **acc, "imp_random_gap": float(gap[worst]),
                                     "allowed_gap": float(allowed[worst])})


def c5(sens: pd.DataFrame) -> Finding:
    """Further pruning by magnitude with stale BN statistics (the paper's protocol: no retraining, no
    recalibration), at the lowest density where random and at least one other method have curves, at
    the largest fraction f all their curves share: random's accuracy drop acc(0) − acc(f), means
    over seeds, is larger than every other method's (random-like-M baselines are random structures too,
    so they are left out)."""
    sens = _plain(sens)
    stale = sens[(sens["mode"] == "magnitude") & ~sens["bn_recalibrated"].astype(bool)]
    stale = stale[(stale["method"] == "random") | ~stale["method"].str.startswith("random")]  # not random-like-M
    densities = [d for d, g in stale.groupby("density") if "random" in set(g["method"]) and g["method"].nunique() > 1]
    if not densities:
        raise Missing("no density with magnitude curves of random and another method")
    d = min(densities)
    at = stale[stale["density"] == d]
    shared = set.intersection(*(set(g) for _, g in at.groupby("method")["fraction"]))
    f = max(shared)
    if 0 not in shared or f == 0:
        raise Missing(f"curves at density {d:.4g} need fraction 0 and a larger fraction shared by every method")
    acc = at[at["fraction"].isin([0, f])].groupby(["method", "fraction"])["test_acc"].mean().unstack()
    drop = (acc[0] - acc[f]).to_dict()
    others = max(v for m, v in drop.items() if m != "random")
    return Finding(drop["random"] > others, f"accuracy drop after removing {f:g} of the kept weights by magnitude "
                   f"at density {d:.4g}: {_listing(drop)}", {"density": d, "fraction": f, **drop})


def c6(overlap: pd.DataFrame) -> Finding:
    """DNW at the lowest density with a per-epoch record, means over seeds: (a) overlap_final at epoch 1
    ≥ 0.5, i.e. at least half of the structure after the first epoch is in the final one (a structure
    redrawn at random would keep about a `density` share); and (b) change per epoch c(e) =
    1 − overlap_prev(e) is largest at the start: c at the first epoch where it is known (epoch 1 if the
    initial structure was recorded, else epoch 2) exceeds the mean of c over the later epochs."""
    dnw = _plain(overlap[overlap["method"] == "dnw"])
    if dnw.empty:
        raise Missing("no dnw structure records")
    d = dnw["density"].min()
    per_epoch = dnw[dnw["density"] == d].groupby("epoch")[["overlap_prev", "overlap_final"]].mean()
    change = (1 - per_epoch["overlap_prev"]).dropna()
    if 1 not in per_epoch.index or len(change) < 2:
        raise Missing(f"dnw at density {d:.4g} needs epoch 1 and two epochs with a known change")
    kept, first, later = float(per_epoch.loc[1, "overlap_final"]), float(change.iloc[0]), float(change.iloc[1:].mean())
    measured = (f"at density {d:.4g}: epoch 1 structure kept to the end {kept:.3f}; change in epoch "
                f"{change.index[0]} {first:.3f}, mean change in later epochs {later:.3f}")
    return Finding(kept >= MOSTLY and first > later, measured,
                   {"density": d, "overlap_final_epoch1": kept, "change_first": first, "change_later": later})


def c7(runs: pd.DataFrame) -> Finding:
    """At the lowest density with both DNW runs frozen after k ≤ 5 epochs (rows with freeze_epoch = k,
    original weights) and full DNW runs (method dnw, never frozen): the best mean final test accuracy
    over those k is at least full DNW's mean minus 1 pp."""
    original = runs[runs["variant"] == "original"]
    frozen = original[original["freeze_epoch"].le(5)] if "freeze_epoch" in original else original.iloc[:0]
    full = _plain(runs[runs["method"] == "dnw"])
    common = set(frozen["density"]) & set(full["density"])
    if not common:
        raise Missing("no density with both dnw runs frozen after k ≤ 5 epochs and full dnw runs")
    d = min(common)
    by_k = frozen[frozen["density"] == d].groupby("freeze_epoch")["final_test_acc"].mean()
    best_k, best = float(by_k.idxmax()), float(by_k.max())
    reference = float(full.loc[full["density"] == d, "final_test_acc"].mean())
    measured = f"test accuracy at density {d:.4g}: best frozen (k = {best_k:g}) {best:.3f}, full dnw {reference:.3f}"
    return Finding(best >= reference - TOLERANCE, measured,
                   {"density": d, "best_k": best_k, "best_frozen": best, "dnw": reference})


Test = Callable[[pd.DataFrame], Finding]
TESTS: dict[str, Test] = {"C1": c1, "C2": c2, "C3": c3, "C4": c4, "C5": c5, "C6": c6, "C7": c7}


# ------------------------------------------------------------------------------------------ verdicts
def build(phew_runs: pd.DataFrame | None, phew_layers: pd.DataFrame | None, dec_runs: pd.DataFrame | None,
          dec_sens: pd.DataFrame | None, dec_overlap: pd.DataFrame | None) -> list[dict]:
    """One row per claim and network it could be tested on (one row when it could be tested on none)."""
    tables = {"C1": phew_layers, "C2": phew_runs, "C3": phew_runs, "C4": dec_runs, "C5": dec_sens, "C6": dec_overlap,
              "C7": dec_runs}
    return [row for cid, test in TESTS.items() for row in _judge(cid, test, tables[cid])]


def _judge(cid: str, test: Test, table: pd.DataFrame | None) -> list[dict]:
    if table is None or table.empty:
        return [_row(cid, "", NOT_ENOUGH, "the preset has no runs for this claim")]
    network = table["model"] + "/" + table["dataset"]
    rows = []
    for net in sorted(network.unique()):
        try:
            found = test(table[network == net])
        except Missing as e:
            rows.append(_row(cid, net, NOT_ENOUGH, str(e)))
        else:
            rows.append(_row(cid, net, REPRODUCED if found.holds else NOT_REPRODUCED, found.measured, found.numbers))
    return rows


def _row(cid: str, network: str, verdict: str, measured: str, numbers: dict[str, float] | None = None) -> dict:
    return {"id": cid, "network": network, "claim": CLAIMS[cid], "verdict": verdict, "measured": measured,
            **(numbers or {})}


def write(claims: list[dict], md_path: str | os.PathLike, csv_path: str | os.PathLike, *, preset: str = "",
          tables: Sequence[str] = ()) -> None:
    """The verdicts as a table to read at a glance (markdown, with how each claim is tested) and as CSV,
    whose method-named columns hold the quantity `measured` names."""
    counts = ", ".join(f"{sum(c['verdict'] == v for c in claims)} {v}" for v in MARKS)
    source = (f"preset `{preset}`" if preset else "this preset") + (
        ", from " + ", ".join(f"`{t}`" for t in tables) if tables else "")
    lines = ["# Claims C1–C7 of PAPERS.md", "", f"Verdicts on {source}: {counts} (one row per claim and network).",
             "", "| Claim | Network | Verdict | Measured |", "|---|---|---|---|"]
    lines += [f"| **{c['id']}** {_cell(c['claim'])} | {c['network'] or '–'} | {MARKS[c['verdict']]} {c['verdict']} "
              f"| {_cell(c['measured'])} |" for c in claims]
    lines += ["", "## How each claim is tested", "", RULES, ""]
    lines += [f"- **{cid}** " + " ".join(inspect.cleandoc(test.__doc__).split()) for cid, test in TESTS.items()]
    write_text(md_path, "\n".join(lines) + "\n")
    write_text(csv_path, pd.DataFrame(claims).to_csv(index=False, float_format="%.6g"))


def _cell(text: str) -> str:
    return text.replace("|", "\\|")
