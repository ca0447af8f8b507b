"""The claims a run is judged by (C1–C7 and C5b of the two papers; docs/METHODS.md, "Claim tests"), each tested on the tidy tables of one network.

Each study is judged on its own tables by its protocol's claims (sparsenets.study.PROTOCOLS: C1–C3 on a phew
study, C4–C7 and C5b on a deconstructing one), at its own options.
C1–C3 compare named methods at initialisation (phew against synflow, synflow-l2, random); a phew study's
reference `mag` (pruned after training) is in its tables but enters no claim (tests/test_mag.py).

Each test's docstring is its exact definition; `write` prints them under the verdicts. The statistics are
in `stats`: per-seed measurements, 95 % t-intervals, paired (or Welch) differences. A difference inside
the seed noise is never `reproduced`. No torch here: a claims job reads CSVs only.
"""
from __future__ import annotations

import inspect
import math
import os
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from . import stats
from .io import write_text
from .stats import Interval
from .study import PROTOCOLS

REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE, NOT_ENOUGH = "reproduced", "not reproduced", "inconclusive", "not enough runs"
VERDICTS = (REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE, NOT_ENOUGH)
MARKS = {REPRODUCED: "✅", NOT_REPRODUCED: "❌", INCONCLUSIVE: "❔", NOT_ENOUGH: "⚪"}
_FROM_PARTS = {stats.HOLDS: REPRODUCED, stats.CONTRADICTED: NOT_REPRODUCED, stats.OPEN: INCONCLUSIVE}
MOSTLY = 0.5  # the share of epoch 1's structure that must survive to the end for "mostly fixed"
MIN_SPAN = 0.02  # acc(0) − chance below this: a sensitivity curve cannot be normalised
FOCUS_TOLERANCE = 1e-3  # relative: the table's density taken for the focus density
METHODS_DOC = "docs/METHODS.md"  # every method, experiment, choice and claim test, described once
NUMBER_COLUMNS = ["study", "id", "network", "verdict", "quantity", "method", "density", "detail", "mean", "ci_low",
                  "ci_high", "n_seeds", "seeds"]

RULES = (
    "Statistics: every quantity is measured once per seed and summarised by its mean over seeds and a 95 % "
    "t-interval (mean ± t₀.₉₇₅,ₙ₋₁·sd/√n, sd with ddof = 1). A difference of two methods is paired by seed over "
    "the seeds both have (the same seed gives the same data order and initialisation), else Welch's interval. "
    "\"A above B\" holds when the interval of A − B lies above 0, is contradicted when it lies below 0, and is "
    "within the noise otherwise; with one seed an accuracy comparison is inconclusive, while a structural "
    "measurement (widths, traces, overlaps: deterministic given the seed) is decided by the sign of the "
    "difference. \"About as well\" / \"nearly matches\" holds when the interval lies inside ±δ (δ = "
    "equivalence_margin), is contradicted when it lies wholly beyond ±δ, and is within the noise otherwise. A "
    "claim with several parts is *reproduced* when every part holds, *not reproduced* when any part is "
    "contradicted, *inconclusive* otherwise (a difference within the seed noise is never reproduced), and *not "
    "enough runs* when the tables lack a run it needs. Only runs with their original weights and a structure "
    "never frozen part-way count, unless a test says otherwise. A claim gets one row per network it could be "
    "tested on: it may hold on one network and fail on another."
)

CLAIMS = {
    "C1": "SynFlow-L2 yields narrower (bottleneck) layers than PHEW at equal density.",
    "C2": "PHEW's path-kernel trace is far above random's and, on a log scale, nearer SynFlow-L2's than random's is.",
    "C3": "PHEW beats SynFlow and SynFlow-L2 in test accuracy at low densities.",
    "C4": "After reinit, IMP structures do about as well as random ones with the same per-layer counts; "
          "DNW and RigL stay above random.",
    "C5": "Under further pruning by magnitude, random structures lose accuracy fastest.",
    "C5b": "Under random removal, DNW and IMP degrade slightly less than RigL and random.",
    "C6": "DNW's structure is mostly fixed after the first epoch.",
    "C7": "Freezing DNW's structure after a few epochs nearly matches full DNW, with diminishing returns.",
}


class Missing(Exception):
    """The tables lack runs a test needs; the message says which."""


@dataclass(frozen=True)
class ClaimOptions:
    """What a study's claims are tested at (config keys of the study; sparsenets.study.Protocol.claim_options)."""

    claim_density_max: float = 0.11  # C3: the densities ≤ this are "low"
    focus_density: float | None = None  # C5, C5b: None = the lowest density with the needed curves
    freeze_claim_epoch: int = 1  # C7: the k ≥ 1 after which a frozen structure should nearly match full DNW
    equivalence_margin: float = 0.01  # C4, C7: "about as well" = within ± this much test accuracy

    def __post_init__(self) -> None:
        k = self.freeze_claim_epoch
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"freeze_claim_epoch must be an integer ≥ 1 (k = 0 is the baseline C7 compares "
                             f"against), got {k!r}")
        if not self.claim_density_max > 0:
            raise ValueError(f"claim_density_max must be > 0, got {self.claim_density_max!r}")
        if not self.equivalence_margin > 0:
            raise ValueError(f"equivalence_margin must be > 0, got {self.equivalence_margin!r}")
        if self.focus_density is not None and not 0 < self.focus_density <= 1:
            raise ValueError(f"focus_density must be in (0, 1] or null, got {self.focus_density!r}")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None) -> "ClaimOptions":
        """From JSON-like values; unknown keys are an error naming them."""
        values = dict(values or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown claim option(s): {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        out: dict[str, Any] = {}
        for key, v in values.items():
            try:
                if key == "freeze_claim_epoch":
                    if isinstance(v, bool) or float(v) != int(float(v)):
                        raise ValueError
                    out[key] = int(float(v))
                elif key == "focus_density" and v is None:
                    out[key] = None
                else:
                    out[key] = float(v)
            except (TypeError, ValueError):
                raise ValueError(f"claim option {key}: not a valid value: {v!r}") from None
        return cls(**out)


@dataclass(frozen=True)
class Finding:
    verdict: str  # one of VERDICTS
    measured: str  # what a reader checks the verdict against
    numbers: list[dict] = field(default_factory=list)  # tidy rows: quantity, method, density, detail, mean, ...


# ------------------------------------------------------------------------------------------ helpers
def _need(df: pd.DataFrame, columns: Sequence[str], table: str) -> None:
    absent = [c for c in columns if c not in df]
    if absent:
        raise Missing(f"the {table} table has no {', '.join(absent)} column")


def _prepare(df: pd.DataFrame) -> pd.DataFrame:
    """Densities rounded (so equal densities compare equal), the variant spelled out."""
    variant = df["variant"].fillna("original").replace("", "original") if "variant" in df else "original"
    return df.assign(density=df["density"].astype(float).round(12), variant=variant)


def _variant(df: pd.DataFrame, variant: str) -> pd.DataFrame:
    return df[df["variant"] == variant]


def _unfrozen(df: pd.DataFrame) -> pd.DataFrame:
    """Runs whose structure was never frozen part-way (the freezing study's runs have a freeze_epoch)."""
    return df[df["freeze_epoch"].isna()] if "freeze_epoch" in df else df


def _plain(df: pd.DataFrame) -> pd.DataFrame:
    """Unfrozen runs with their original weights."""
    return _unfrozen(_variant(df, "original"))


def _lowest_common_density(df: pd.DataFrame, methods: Sequence[str], what: str = "runs") -> float:
    return min(_common_densities(df, methods, what))


def _common_densities(df: pd.DataFrame, methods: Sequence[str], what: str = "runs") -> list[float]:
    present = [set(df.loc[df["method"] == m, "density"]) for m in methods]
    absent = [m for m, densities in zip(methods, present) if not densities]
    if absent:
        raise Missing(f"no {', '.join(absent)} {what}")
    common = set.intersection(*present)
    if not common:
        raise Missing(f"no density where {', '.join(methods)} all have {what}")
    return sorted(common)


def _per_seed(df: pd.DataFrame, column: str, how: str = "mean") -> dict[int, float]:
    """{seed: value} (several rows of a seed: their mean, or `how`), NaN dropped."""
    values = df.groupby("seed")[column].agg(how).dropna()
    return {_seed(s): float(v) for s, v in values.items()}


def _seed(s: Any) -> Any:
    try:
        return int(s) if float(s) == int(float(s)) else s
    except (TypeError, ValueError):
        return s


def _num(quantity: str, method: str, density: float, iv: Interval, detail: str = "") -> dict:
    return {"quantity": quantity, "method": method, "density": density, "detail": detail, "mean": iv.mean,
            "ci_low": iv.low, "ci_high": iv.high, "n_seeds": iv.n, "seeds": _seeds(iv.seeds)}


def _count(quantity: str, method: str, density: float, seeds: Sequence, detail: str = "") -> dict:
    """A row that counts seeds (e.g. seeds with a zero trace): mean = their number."""
    return {"quantity": quantity, "method": method, "density": density, "detail": detail, "mean": float(len(seeds)),
            "ci_low": math.nan, "ci_high": math.nan, "n_seeds": len(seeds), "seeds": _seeds(seeds)}


def _verdict(parts: Sequence[str]) -> str:
    return _FROM_PARTS[stats.combine(parts)]


def _seeds(seeds: Sequence) -> str:
    return " ".join(map(str, seeds))


# ---------------------------------------------------------------------------------------- the tests
def c1(layers: pd.DataFrame, options: ClaimOptions) -> Finding:
    """Layers table (width_ratio per run and layer). At the lowest density where phew and synflow-l2 both have
    runs: per seed, a run's narrowest layer is its minimum width_ratio over layers; the difference phew −
    synflow-l2 (paired by seed) is above 0. Structural: with one seed the sign decides."""
    _need(layers, ["width_ratio"], "layers")
    layers = _plain(layers)
    methods = ["phew", "synflow-l2"]
    d = _lowest_common_density(layers, methods)
    at = layers[layers["density"] == d]
    narrow = {m: _per_seed(at[at["method"] == m], "width_ratio", "min") for m in methods}
    diff = stats.difference(narrow["phew"], narrow["synflow-l2"])
    outcome = stats.outcome_greater(diff, point_decides=True)
    ivs = {m: stats.t_interval(v) for m, v in narrow.items()}
    numbers = [_num("narrowest width_ratio", m, d, iv) for m, iv in ivs.items()]
    numbers.append(_num("difference", "phew − synflow-l2", d, diff, "narrowest width_ratio"))
    measured = (f"narrowest layer's width_ratio at density {d:.4g}: phew {ivs['phew'].describe()}, synflow-l2 "
                f"{ivs['synflow-l2'].describe()}; phew − synflow-l2 {diff.describe(signed=True)}: {outcome}")
    return Finding(_verdict([stats.part(outcome)]), measured, numbers)


def c2(runs: pd.DataFrame, options: ClaimOptions) -> Finding:
    """Runs table (init_path_kernel_trace: the path-kernel trace T of the network as training starts). At the
    lowest density where phew, random and synflow-l2 all have runs, with L = log10 T per seed: (a) L(phew) −
    L(random) above 0, paired over the seeds where both traces are positive; (b) on the log scale phew is nearer
    synflow-l2 than random is: per seed |L(random) − L(synflow-l2)| − |L(phew) − L(synflow-l2)| above 0, over the
    seeds where all three are positive. Structural: with one seed the sign decides. A trace of 0 (no input–output
    path) is reported with its method and seeds and never enters a log mean; those seeds drop out of the
    comparisons, and a comparison left with no seed is inconclusive."""
    _need(runs, ["init_path_kernel_trace"], "runs")
    runs = _plain(runs)
    runs = runs[runs["init_path_kernel_trace"].notna()]
    methods = ["phew", "random", "synflow-l2"]
    d = _lowest_common_density(runs, methods, "runs with a path-kernel trace")
    at = runs[runs["density"] == d]
    trace = {m: _per_seed(at[at["method"] == m], "init_path_kernel_trace") for m in methods}
    zero = {m: sorted(s for s, v in t.items() if v <= 0) for m, t in trace.items()}
    logs = {m: {s: math.log10(v) for s, v in t.items() if v > 0} for m, t in trace.items()}
    above = stats.difference(logs["phew"], logs["random"], paired=True)
    gap_l2 = stats.difference(logs["phew"], logs["synflow-l2"], paired=True)
    both = sorted(set(logs["phew"]) & set(logs["random"]) & set(logs["synflow-l2"]))
    nearer = stats.t_interval({s: abs(logs["random"][s] - logs["synflow-l2"][s])
                               - abs(logs["phew"][s] - logs["synflow-l2"][s]) for s in both}, kind="paired")
    oa, ob = stats.outcome_greater(above, True), stats.outcome_greater(nearer, True)

    numbers = [_num("log10 trace", m, d, stats.t_interval(v), "positive traces only") for m, v in logs.items()]
    numbers += [_count("seeds with trace 0", m, d, s) for m, s in zero.items() if s]
    numbers += [_num("difference", "phew − random", d, above, "log10 trace (decades)"),
                _num("difference", "phew − synflow-l2", d, gap_l2, "log10 trace (decades)"),
                _num("difference", "dist(random, synflow-l2) − dist(phew, synflow-l2)", d, nearer,
                     "log10 trace (decades)")]
    notes = [f"{m} has trace 0 (no input–output path) at seed{'s' if len(s) > 1 else ''} {_seeds(s)}"
             for m, s in zero.items() if s]
    if above.n == 0:
        notes.append("no seed where phew and random both have a positive trace")
    if nearer.n == 0:
        notes.append("no seed where phew, random and synflow-l2 all have a positive trace")
    measured = (f"log10 trace at density {d:.4g}: PHEW − SynFlow-L2 {gap_l2.describe('.2f', True)} decades, "
                f"PHEW − random {above.describe('.2f', True)} decades: {oa}; random's distance to SynFlow-L2 minus "
                f"PHEW's {nearer.describe('.2f', True)} decades: {ob}" + "".join(f"; {n}" for n in notes))
    return Finding(_verdict([stats.part(oa), stats.part(ob)]), measured, numbers)


def c3(runs: pd.DataFrame, options: ClaimOptions) -> Finding:
    """Runs table (final_test_acc). At every density ≤ claim_density_max where phew, synflow and synflow-l2 all
    have runs: the test-accuracy differences phew − synflow and phew − synflow-l2, paired by seed. A density is a
    win if both are above 0, a loss if either is below 0. Of n such densities: reproduced if wins > n/2; not
    reproduced if n − losses ≤ n/2 (a majority of wins is impossible); else inconclusive. With one seed no
    density is a win or a loss."""
    _need(runs, ["final_test_acc"], "runs")
    runs = _plain(runs)
    methods = ["phew", "synflow", "synflow-l2"]
    low = runs[runs["density"] <= options.claim_density_max * (1 + 1e-9)]
    try:
        densities = _common_densities(low, methods, f"runs at density ≤ {options.claim_density_max:g}")
    except Missing:
        _common_densities(runs, methods)  # names a method with no runs at all, if that is what is missing
        raise
    wins = losses = 0
    numbers, margins = [], []
    for d in densities:
        at = runs[runs["density"] == d]
        acc = {m: _per_seed(at[at["method"] == m], "final_test_acc") for m in methods}
        numbers += [_num("final_test_acc", m, d, stats.t_interval(v)) for m, v in acc.items()]
        outcomes = []
        for other in ("synflow", "synflow-l2"):
            diff = stats.difference(acc["phew"], acc[other])
            outcomes.append(stats.outcome_greater(diff, point_decides=False))
            numbers.append(_num("difference", f"phew − {other}", d, diff, "final_test_acc"))
            margins.append(f"d={d:.4g} phew − {other} {diff.describe(signed=True)} {outcomes[-1]}")
        wins += all(o == stats.ABOVE for o in outcomes)
        losses += any(o == stats.BELOW for o in outcomes)
    n = len(densities)
    verdict = REPRODUCED if wins > n / 2 else NOT_REPRODUCED if n - losses <= n / 2 else INCONCLUSIVE
    measured = (f"{wins} win(s), {losses} loss(es) of {n} densit{'y' if n == 1 else 'ies'} ≤ "
                f"{options.claim_density_max:g}; " + "; ".join(margins))
    return Finding(verdict, measured, numbers)


def c4(runs: pd.DataFrame, options: ClaimOptions) -> Finding:
    """Runs table (final_test_acc), re-initialised runs only (variant reinit, structure never frozen). (a) At every
    density where imp and random-like-imp (random wiring with IMP's per-layer counts) both have runs: acc(imp) −
    acc(random-like-imp), paired by seed, is equivalent within ±equivalence_margin; all equivalent: the part holds,
    any different: contradicted. (b) At the lowest density where random, dnw and rigl all have runs (they share
    the same layer allocation by construction, so random is their fair comparator): dnw − random and rigl −
    random are both above 0."""
    _need(runs, ["final_test_acc"], "runs")
    reinit = _unfrozen(_variant(runs, "reinit"))
    what = "re-initialised runs"
    like = _common_densities(reinit, ["imp", "random-like-imp"], what)
    db = _lowest_common_density(reinit, ["random", "dnw", "rigl"], what)
    margin = options.equivalence_margin

    def acc(d: float, m: str) -> dict:
        return _per_seed(reinit[(reinit["density"] == d) & (reinit["method"] == m)], "final_test_acc")

    numbers, text_a, outcomes_a = [], [], []
    for d in like:
        a = {m: acc(d, m) for m in ("imp", "random-like-imp")}
        numbers += [_num("final_test_acc", m, d, stats.t_interval(v), "reinit") for m, v in a.items()]
        diff = stats.difference(a["imp"], a["random-like-imp"])
        outcomes_a.append(stats.equivalence(diff, margin))
        numbers.append(_num("difference", "imp − random-like-imp", d, diff, "final_test_acc, reinit"))
        text_a.append(f"d={d:.4g} {diff.describe(signed=True)} {outcomes_a[-1]}")
    part_a = (stats.CONTRADICTED if stats.DIFFERENT in outcomes_a
              else stats.HOLDS if all(o == stats.EQUIVALENT for o in outcomes_a) else stats.OPEN)
    b = {m: acc(db, m) for m in ("random", "dnw", "rigl")}
    numbers += [_num("final_test_acc", m, db, stats.t_interval(v), "reinit") for m, v in b.items()]
    parts_b, text_b = [], []
    for m in ("dnw", "rigl"):
        diff = stats.difference(b[m], b["random"])
        outcome = stats.outcome_greater(diff, point_decides=False)
        parts_b.append(stats.part(outcome))
        numbers.append(_num("difference", f"{m} − random", db, diff, "final_test_acc, reinit"))
        text_b.append(f"{m} − random {diff.describe(signed=True)} {outcome}")
    measured = (f"(a) imp − random-like-imp vs the equivalence margin ±{margin:g}: " + "; ".join(text_a)
                + f". (b) at density {db:.4g}: " + ", ".join(text_b))
    return Finding(_verdict([part_a, *parts_b]), measured, numbers)


def _bool(series: pd.Series) -> pd.Series:
    if series.dtype == bool:
        return series
    return series.astype(str).str.strip().str.lower().isin(["true", "1", "1.0", "yes"])


def _sensitivity(sens: pd.DataFrame, options: ClaimOptions) -> tuple[pd.DataFrame, float]:
    """The original, unfrozen curves and the density C5 and C5b are judged at."""
    _need(sens, ["mode", "bn_recalibrated", "fraction", "test_acc"], "sensitivity")
    if "num_classes" not in sens:
        raise Missing("the sensitivity table has no num_classes column (the chance level): rebuild it "
                      "(python -m sparsenets table --kind sensitivity)")
    sens = _plain(sens).assign(bn_recalibrated=lambda t: _bool(t["bn_recalibrated"]))
    stale = sens[~sens["bn_recalibrated"]]
    if stale.empty:
        raise Missing("no sensitivity curves with stale BN statistics")
    densities = sorted(stale["density"].unique())
    if options.focus_density is not None:
        focus = options.focus_density
        d = min(densities, key=lambda x: abs(x - focus))
        if abs(d - focus) > FOCUS_TOLERANCE * focus:
            raise Missing(f"no sensitivity curves at the focus density {focus:.4g} (have "
                          f"{', '.join(f'{x:.4g}' for x in densities)})")
        return sens, float(d)
    usable = [d for d, g in stale.groupby("density")
              if "random" in set(g["method"]) and any(_compared(m) and m != "random" for m in set(g["method"]))]
    if not usable:
        raise Missing("no density with sensitivity curves of random and another method")
    return sens, float(min(usable))


def _compared(method: str) -> bool:
    """random-like-M structures are random wiring too: not compared with random."""
    return not method.startswith("random-like-")


def _areas(curves: pd.DataFrame) -> tuple[dict[str, dict], list[str], tuple[float, float]]:
    """Per run (method, seed): area under a(f) = (acc(f) − chance)/(acc(0) − chance), trapezoid over the fractions
    every run has, divided by (max f − min f). Also the runs that cannot be normalised, and the fraction range."""
    per_run = curves.groupby(["method", "seed", "fraction"])["test_acc"].mean()
    runs = per_run.groupby(level=[0, 1])
    shared = set.intersection(*(set(g.index.get_level_values(2)) for _, g in runs))
    f = np.array(sorted(shared), dtype=float)
    if len(f) < 2 or f[0] != 0:
        raise Missing("the sensitivity curves share no fraction 0 and a larger fraction")
    chance = 1.0 / curves.groupby(["method", "seed"])["num_classes"].first()
    areas: dict[str, dict] = {}
    unusable = []
    for (method, seed), g in runs:
        acc = g.droplevel([0, 1]).loc[f].to_numpy(dtype=float)
        c = float(chance[(method, seed)])
        span = acc[0] - c
        areas.setdefault(method, {})
        if not span >= MIN_SPAN:
            unusable.append(f"{method} seed {_seed(seed)} (acc(0) − chance {span:.3f})")
            continue
        a = (acc - c) / span
        areas[method][_seed(seed)] = float(np.sum((a[1:] + a[:-1]) / 2 * np.diff(f)) / (f[-1] - f[0]))
    return areas, unusable, (float(f[0]), float(f[-1]))


def _area_test(sens: pd.DataFrame, options: ClaimOptions, mode: str, pairs: Sequence[tuple[str, str]] | None,
               label: str) -> Finding:
    sens, d = _sensitivity(sens, options)
    at = sens[(sens["density"] == d) & (sens["mode"] == mode)]
    stale, recal = at[~at["bn_recalibrated"]], at[at["bn_recalibrated"]]
    methods = sorted(set(stale["method"]))
    if pairs is None:  # C5: every compared method against random
        if "random" not in methods:
            raise Missing(f"no random {mode} curves at density {d:.4g}")
        others = [m for m in methods if m != "random" and _compared(m)]
        if not others:
            raise Missing(f"no {mode} curves of a method besides random at density {d:.4g}")
        pairs = [(m, "random") for m in others]
    needed = sorted({m for p in pairs for m in p})
    absent = [m for m in needed if m not in methods]
    if absent:
        raise Missing(f"no {', '.join(absent)} {mode} curves at density {d:.4g}")
    stale = stale[stale["method"].isin(needed)]
    areas, unusable, (f0, f1) = _areas(stale)
    quantity = f"area ({label}, stale BN)"
    numbers = [_num(quantity, m, d, stats.t_interval(areas[m]), f"f = {f0:g}…{f1:g}") for m in needed]
    parts, text = [], []
    for m, ref in pairs:
        diff = stats.difference(areas[m], areas[ref])
        outcome = stats.outcome_greater(diff, point_decides=False)
        parts.append(stats.part(outcome))
        numbers.append(_num("difference", f"{m} − {ref}", d, diff, quantity))
        text.append(f"{m} − {ref} {diff.describe(signed=True)} {outcome}")
    if not recal.empty:
        try:
            recal_areas, _, (r0, r1) = _areas(recal[recal["method"].isin(needed)])
        except Missing:
            recal_areas = {}
        numbers += [_num(f"area ({label}, recalibrated BN)", m, d, stats.t_interval(v), f"f = {r0:g}…{r1:g}")
                    for m, v in recal_areas.items()]
    notes = ""
    if unusable:
        notes += "; cannot be normalised (acc(0) − chance < 0.02): " + ", ".join(unusable)
    empty = [m for m in needed if not areas.get(m)]
    if empty:
        notes += f"; no normalisable seed of {', '.join(empty)}"
    measured = (f"area under the normalised curve ({label}, stale BN, f = {f0:g}…{f1:g}) at density {d:.4g}: "
                + "; ".join(text) + notes)
    return Finding(_verdict(parts), measured, numbers)


def c5(sens: pd.DataFrame, options: ClaimOptions) -> Finding:
    """Sensitivity table (method, density, seed, mode, bn_recalibrated, fraction, test_acc, num_classes; chance =
    1/num_classes). Further pruning by magnitude with stale BN statistics (the paper's protocol: no retraining,
    no recalibration), at focus_density (the table's nearest density within 0.1 %) or, with none given, the lowest
    density with curves of random and another method. Per run, the normalised curve a(f) = (acc(f) − chance) /
    (acc(0) − chance) over the fractions every run has, and its area = trapezoid over f / (max f − min f) (an
    untouched network scores 1). A run with acc(0) − chance < 0.02 cannot be normalised and is listed. Random
    structures lose accuracy fastest: for every other method M (random-like-M baselines are random structures too
    and are left out), area(M) − area(random), paired by seed, is above 0. Areas with recalibrated BN are reported,
    not judged."""
    return _area_test(sens, options, "magnitude", None, "magnitude")


def c5b(sens: pd.DataFrame, options: ClaimOptions) -> Finding:
    """Sensitivity table, as C5 (same density, same normalised areas, stale BN) but removing weights at random
    (mode random): area(dnw) − area(rigl), area(dnw) − area(random), area(imp) − area(rigl) and area(imp) −
    area(random), each paired by seed, are all above 0."""
    pairs = [("dnw", "rigl"), ("dnw", "random"), ("imp", "rigl"), ("imp", "random")]
    return _area_test(sens, options, "random", pairs, "random removal")


def c6(overlap: pd.DataFrame, options: ClaimOptions) -> Finding:
    """Overlap table (per run and epoch: overlap_prev, the share of the previous epoch's kept weights this epoch
    keeps, and overlap_final, the share of this epoch's kept weights the final structure keeps; epoch 0 is DNW's
    structure at init). DNW runs at the lowest density with records: (a) the epoch-1 structure keeps at least half
    of its edges to the end: overlap_final(1) − 0.5 above 0; (b) change per epoch c(e) = 1 − overlap_prev(e) for
    e ≥ 1, total change 1 − overlap_final(0), share(e) = c(e)/total: epoch 1 makes the largest share: with e* the
    later epoch with the largest mean change, c(1) − c(e*) per seed above 0. Structural: with one seed the sign
    decides. No epoch-0 record: not enough runs (the structure at init was not recorded)."""
    _need(overlap, ["epoch", "overlap_prev", "overlap_final"], "overlap")
    dnw = _plain(overlap[overlap["method"] == "dnw"])
    if dnw.empty:
        raise Missing("no dnw structure records")
    d = float(dnw["density"].min())
    at = dnw[dnw["density"] == d].astype({"epoch": int})
    per = at.groupby(["seed", "epoch"])[["overlap_prev", "overlap_final"]].mean()
    prev, final = per["overlap_prev"].unstack("epoch"), per["overlap_final"].unstack("epoch")
    epochs = sorted(int(e) for e in final.columns)
    if 0 not in epochs or final[0].isna().all():
        raise Missing(f"dnw at density {d:.4g}: the structure at init was not recorded (no epoch-0 record)")
    change = (1 - prev[[e for e in prev.columns if e >= 1]]).dropna(axis=1, how="all")
    if 1 not in change.columns:
        raise Missing(f"dnw at density {d:.4g}: no change recorded for epoch 1")
    later = [e for e in change.columns if e > 1]
    if not later:
        raise Missing(f"dnw at density {d:.4g}: no record of an epoch after the first")

    def col(frame: pd.DataFrame, e: Any) -> dict:
        return {_seed(s): float(v) for s, v in frame[e].dropna().items()}

    kept = stats.t_interval({s: v - MOSTLY for s, v in col(final, 1).items()})
    kept_iv = stats.t_interval(col(final, 1))
    e_star = int(change[later].mean().idxmax())
    first = stats.difference(col(change, 1), col(change, e_star), paired=True)
    oa, ob = stats.outcome_greater(kept, True), stats.outcome_greater(first, True)
    total = (1 - final[0]).where(lambda t: t > 0)
    shares = change.div(total, axis=0)
    numbers = [_num("overlap_final", "dnw", d, kept_iv, "epoch 1"),
               _num("difference", "dnw", d, kept, "overlap_final(1) − 0.5")]
    numbers += [_num("change share", "dnw", d, stats.t_interval(col(shares, e)), f"epoch {int(e)}")
                for e in shares.columns]
    numbers.append(_num("difference", "dnw", d, first, f"change epoch 1 − epoch {e_star}"))
    share1 = stats.t_interval(col(shares, 1))
    measured = (f"dnw at density {d:.4g}: epoch-1 structure kept to the end {kept_iv.describe()} (≥ 0.5: {oa}); "
                f"epoch 1's share of the init→final change {share1.describe()}; change epoch 1 − epoch {e_star} "
                f"(the largest later one) {first.describe(signed=True)}: {ob}")
    return Finding(_verdict([stats.part(oa), stats.part(ob)]), measured, numbers)


def c7(runs: pd.DataFrame, options: ClaimOptions) -> Finding:
    """Runs table (final_test_acc, freeze_epoch), original weights. With k = freeze_claim_epoch (≥ 1): frozen runs
    are method dnw-freeze{k} with freeze_epoch = k, the k = 0 baseline is dnw-freeze0, full DNW is method dnw never
    frozen. At the lowest density where all three have runs: (a) acc(frozen k) − acc(full dnw), paired by seed, is
    equivalent within ±equivalence_margin; (b) diminishing returns: per seed (acc_k − acc_0) − (acc_full − acc_k)
    is above 0. k = 0 never stands in for k."""
    _need(runs, ["final_test_acc"], "runs")
    k = options.freeze_claim_epoch
    original = _variant(runs, "original")

    def frozen(j: int) -> pd.DataFrame:
        rows = original[original["method"] == f"dnw-freeze{j}"]
        return rows[np.isclose(rows["freeze_epoch"].astype(float), j)] if "freeze_epoch" in rows else rows

    full = _unfrozen(original[original["method"] == "dnw"])
    names = {f"dnw-freeze{k}": frozen(k), "dnw-freeze0": frozen(0), "dnw": full}
    d = _lowest_common_density(pd.concat(names.values()), list(names))
    acc = {m: _per_seed(t[t["density"] == d], "final_test_acc") for m, t in names.items()}
    a_k, a_0, a_full = acc[f"dnw-freeze{k}"], acc["dnw-freeze0"], acc["dnw"]
    near = stats.difference(a_k, a_full)
    oa = stats.equivalence(near, options.equivalence_margin)
    common = sorted(set(a_k) & set(a_0) & set(a_full))
    diminishing = stats.t_interval({s: (a_k[s] - a_0[s]) - (a_full[s] - a_k[s]) for s in common}, kind="paired")
    ob = stats.outcome_greater(diminishing, point_decides=False)
    numbers = [_num("final_test_acc", m, d, stats.t_interval(v), f"k = {m.removeprefix('dnw-freeze')}"
                    if m != "dnw" else "full DNW") for m, v in acc.items()]
    numbers += [_num("difference", f"dnw-freeze{k} − dnw", d, near, "final_test_acc"),
                _num("difference", "(k − 0) − (full − k)", d, diminishing, f"final_test_acc, k = {k}")]
    measured = (f"at density {d:.4g}, k = {k}: frozen − full DNW {near.describe(signed=True)} "
                f"(vs the equivalence margin ±{options.equivalence_margin:g}: {oa}); gain 0→k minus gain k→full "
                f"{diminishing.describe(signed=True)}: {ob}")
    return Finding(_verdict([stats.part(oa), stats.part(ob)]), measured, numbers)


Test = Callable[[pd.DataFrame, ClaimOptions], Finding]
TESTS: dict[str, Test] = {"C1": c1, "C2": c2, "C3": c3, "C4": c4, "C5": c5, "C5b": c5b, "C6": c6, "C7": c7}


# ------------------------------------------------------------------------------------------ verdicts
@dataclass(frozen=True)
class StudyTables:
    """One study to judge: its name, its protocol (which claims, each on which table), its tidy tables (table
    kind -> table; None or absent: no runs) and the options its claims are tested at."""

    study: str
    protocol: str
    tables: Mapping[str, pd.DataFrame | None]
    options: ClaimOptions = field(default_factory=ClaimOptions)


def build(studies: Sequence[StudyTables]) -> list[dict]:
    """One row per study, claim of its protocol and network it could be tested on (one row when it could be
    tested on none): study, id, network, claim, verdict, measured, numbers (tidy rows, see NUMBER_COLUMNS)."""
    rows = []
    for s in studies:
        if s.protocol not in PROTOCOLS:
            raise ValueError(f"study {s.study}: unknown protocol {s.protocol!r}; known: {', '.join(PROTOCOLS)}")
        extra = sorted(set(s.tables) - set(PROTOCOLS[s.protocol].claims.values()))
        if extra:
            raise ValueError(f"study {s.study}: no claim of protocol {s.protocol} reads table(s) {', '.join(extra)}")
        for cid, table in PROTOCOLS[s.protocol].claims.items():
            rows += _judge(s.study, cid, TESTS[cid], s.tables.get(table), s.options)
    return rows


def _judge(study: str, cid: str, test: Test, table: pd.DataFrame | None, options: ClaimOptions) -> list[dict]:
    if table is None or table.empty:
        return [_row(study, cid, "", Finding(NOT_ENOUGH, "the preset has no runs for this claim"))]
    if not {"model", "dataset"} <= set(table.columns):
        return [_row(study, cid, "", Finding(NOT_ENOUGH, "the table has no model and dataset columns"))]
    table = _prepare(table)
    network = table["model"].astype(str) + "/" + table["dataset"].astype(str)
    rows = []
    for net in sorted(network.unique()):
        try:
            found = test(table[network == net], options)
        except Missing as e:
            found = Finding(NOT_ENOUGH, str(e))
        rows.append(_row(study, cid, net, found))
    return rows


def _row(study: str, cid: str, network: str, found: Finding) -> dict:
    numbers = [{"study": study, "id": cid, "network": network, "verdict": found.verdict, **n} for n in found.numbers]
    return {"study": study, "id": cid, "network": network, "claim": CLAIMS[cid], "verdict": found.verdict,
            "measured": found.measured, "numbers": numbers}


def numbers_frame(claims: Sequence[dict]) -> pd.DataFrame:
    """The tidy number rows of every verdict; a verdict with no numbers gets one row with empty quantity."""
    rows = []
    for c in claims:
        rows += c.get("numbers") or [{"study": c["study"], "id": c["id"], "network": c["network"],
                                      "verdict": c["verdict"]}]
    return pd.DataFrame(rows, columns=NUMBER_COLUMNS)


# --------------------------------------------------------------------------------------------- output
def _fmt(x: Any) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.4g}"


def _ci_cell(n: dict) -> str:
    if n.get("quantity", "").startswith("seeds with"):
        return f"{n['n_seeds']}"
    if n["n_seeds"] == 0 or math.isnan(n["mean"]):
        return "–"
    if n["n_seeds"] == 1 or math.isnan(n["ci_low"]):
        return f"{_fmt(n['mean'])} (one seed)"
    return f"{_fmt(n['mean'])} [{_fmt(n['ci_low'])}, {_fmt(n['ci_high'])}]"


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|")


def write(claims: list[dict], md_path: str | os.PathLike, csv_path: str | os.PathLike, *, preset: str = "",
          tables: Sequence[str] = (), options: Mapping[str, Mapping[str, Any]] | None = None,
          provenance: str = "") -> None:
    """The verdicts as a table to read at a glance with each claim's numbers and how each claim is tested
    (markdown), and the tidy numbers as CSV (NUMBER_COLUMNS, the verdict on each row). Both written atomically.
    `options`: study -> the claim options it was given."""
    counts = ", ".join(f"{MARKS[v]} {sum(c['verdict'] == v for c in claims)} {v}" for v in VERDICTS)
    source = (f"preset `{preset}`" if preset else "this preset") + (
        ", from " + ", ".join(f"`{t}`" for t in tables) if tables else "")
    lines = ["# Claims C1–C7 and C5b of the two papers", "",
             f"Verdicts on {source}: {counts} (one row per study, claim and network).", ""]
    lines += [provenance, ""] if provenance else []  # commit, data digests (sparsenets.provenance.markdown)
    if options:
        lines += ["Options: " + "; ".join(f"{study}: " + (", ".join(f"{k} = {v}" for k, v in values.items()) or "defaults")
                                          for study, values in options.items()) + ".", ""]
    lines += ["| Study | Claim | Network | Verdict | Measured |", "|---|---|---|---|---|"]
    lines += [f"| {c['study']} | **{c['id']}** {_cell(c['claim'])} | {c['network'] or '–'} | {MARKS[c['verdict']]} "
              f"{c['verdict']} | {_cell(c['measured'])} |" for c in claims]
    lines += ["", "## The numbers behind each verdict", ""]
    for c in claims:
        lines += [f"### {c['id']} · {c['network'] or '–'} · {c['study']}", "", f"{MARKS[c['verdict']]} {c['verdict']}: "
                  f"{c['measured']}", ""]
        if c.get("numbers"):
            lines += ["| quantity | method | density | detail | mean [95 % CI] | seeds |", "|---|---|---|---|---|---|"]
            lines += [f"| {_cell(n['quantity'])} | {_cell(n['method'])} | {_fmt(n['density'])} | {_cell(n['detail'])} "
                      f"| {_ci_cell(n)} | {n['seeds'] or '–'} |" for n in c["numbers"]]
            lines.append("")
    lines += ["## How each claim is tested", "", RULES, "", f"The methods, experiments and choices behind these tests: "
              f"`{METHODS_DOC}` in the sparsenets repository.", ""]
    lines += [f"- **{cid}** {CLAIMS[cid]} *Test:* " + " ".join(inspect.cleandoc(test.__doc__).split())
              for cid, test in TESTS.items()]
    write_text(md_path, "\n".join(lines) + "\n")
    write_text(csv_path, numbers_frame(claims).to_csv(index=False, float_format="%.6g"))
