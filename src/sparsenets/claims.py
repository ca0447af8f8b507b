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
from dataclasses import dataclass, field, fields, replace
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from . import stats
from .io import write_text
from .stats import Interval
from .study import PROTOCOLS

REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE, NOT_ENOUGH = "reproduced", "not reproduced", "inconclusive", "not enough runs"
OUTSIDE = "outside the claim's regime"  # this run cannot test the claim as worded (Finding.regime says why)
VERDICTS = (REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE, NOT_ENOUGH, OUTSIDE)
MARKS = {REPRODUCED: "✅", NOT_REPRODUCED: "❌", INCONCLUSIVE: "❔", NOT_ENOUGH: "⚪", OUTSIDE: "🔭"}
_FROM_PARTS = {stats.HOLDS: REPRODUCED, stats.CONTRADICTED: NOT_REPRODUCED, stats.OPEN: INCONCLUSIVE}
MIN_SPAN = 0.02  # acc(0) − chance below this: a sensitivity curve cannot be normalised
FOCUS_TOLERANCE = 1e-3  # relative: the table's density taken for the focus density
METHODS_DOC = "docs/METHODS.md"  # every method, experiment, choice and claim test, described once
# on every number row, what its verdict says: so the report (and a reader's script) needs claims.csv only
VERDICT_COLUMNS = ["regime", "robustness", "decide", "claim", "measured", "paper", "setting"]
NUMBER_COLUMNS = ["study", "id", "network", "verdict", "quantity", "method", "density", "detail", "mean", "ci_low",
                  "ci_high", "n_seeds", "seeds", *VERDICT_COLUMNS]

RULES = (
    "Statistics: every quantity is measured once per seed and summarised by its mean over seeds and a 95 % "
    "t-interval (mean ± t₀.₉₇₅,ₙ₋₁·sd/√n, sd with ddof = 1). A difference of two methods is paired by seed over "
    "the seeds both have (the same seed gives the same data order and initialisation), else Welch's interval. "
    "An accuracy is also an estimate from a finite test set: an accuracy comparison's interval is t·√(sd²/n + "
    "p̄(1 − p̄)/n_test), one accuracy's binomial variance at the compared runs' mean accuracy p̄ on the run's "
    "n_test test images added to the seed variance (df by Welch–Satterthwaite), so a zero-width interval never "
    "decides. \"A above B\" holds when the interval of A − B lies above 0, is contradicted when it lies below 0, "
    "and is within the noise otherwise; with one seed an accuracy comparison is inconclusive, while a structural "
    "measurement (widths, traces, overlaps: deterministic given the seed) is decided by its value, but only when "
    "it is at least the claim's effect-size floor (structural_floor, trace_floor_decades); a smaller one decides "
    "nothing, with any number of seeds. \"About as well\" / \"nearly matches\" holds when the interval lies inside "
    "±δ (δ = equivalence_margin), is contradicted when it lies wholly beyond ±δ, and is within the noise otherwise. "
    "A claim with several parts is *reproduced* when every part holds, *not reproduced* when any part is "
    "contradicted, *inconclusive* otherwise (a difference within the noise is never reproduced; an inconclusive "
    "verdict says which comparison is open and about how many seeds would decide it: n ≈ sd²/((effect/(z₀.₉₇₅ + "
    "z₀.₈))² − p̄(1 − p̄)/n_test), 80 % power), *not enough runs* when the tables lack a run it needs, and *outside "
    "the claim's regime* when this run cannot test the claim as the paper words it (the reason in numbers; the "
    "rule per claim: docs/METHODS.md, \"Claim regimes\"). A missing or diverged run of a compared method is named "
    "in the verdict and never silently dropped: a verdict that would rest on the surviving runs is inconclusive. "
    "Only runs with their original weights and a structure never frozen part-way count, unless a test says "
    "otherwise. A claim gets one row per network it could be tested on: it may hold on one network and fail on "
    "another."
)

CLAIMS = {
    "C1": "SynFlow-L2 yields narrower (bottleneck) layers than PHEW at equal density.",
    "C2": "PHEW's path-kernel trace is far above random's and, on a log scale, nearer SynFlow-L2's than random's.",
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
    structural_floor: float = 0.05  # C1 (width_ratio), C6 (change share): the smallest structural effect that decides
    min_trace_gap_decades: float = 1.0  # C2 (a): "far above" = at least this many decades (a factor 10)
    trace_floor_decades: float = 0.3  # C2 (b): the smallest log-distance difference that decides (a factor 2)
    sensitivity_ranking: str = "global"  # C5, C5b: the reading their verdict is given under (readings: all)
    sensitivity_bn: str = "stale"  # C5, C5b: stale (the paper's protocol) or recalibrated BN statistics

    def __post_init__(self) -> None:
        k = self.freeze_claim_epoch
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"freeze_claim_epoch must be an integer ≥ 1 (k = 0 is the baseline C7 compares "
                             f"against), got {k!r}")
        if not self.claim_density_max > 0:
            raise ValueError(f"claim_density_max must be > 0, got {self.claim_density_max!r}")
        if not self.equivalence_margin > 0:
            raise ValueError(f"equivalence_margin must be > 0, got {self.equivalence_margin!r}")
        if not 0 <= self.structural_floor < 0.5:
            raise ValueError(f"structural_floor must be in [0, 0.5) (C6 tests a share above 0.5 by it), got "
                             f"{self.structural_floor!r}")
        if not self.min_trace_gap_decades > 0:
            raise ValueError(f"min_trace_gap_decades must be > 0 (\"far above\"), got {self.min_trace_gap_decades!r}")
        if not self.trace_floor_decades >= 0:
            raise ValueError(f"trace_floor_decades must be ≥ 0, got {self.trace_floor_decades!r}")
        if self.focus_density is not None and not 0 < self.focus_density <= 1:
            raise ValueError(f"focus_density must be in (0, 1] or null, got {self.focus_density!r}")
        for key, allowed in (("sensitivity_ranking", ("global", "layer")), ("sensitivity_bn", ("stale", "recalibrated"))):
            if getattr(self, key) not in allowed:
                raise ValueError(f"{key} must be one of {', '.join(allowed)}, got {getattr(self, key)!r}")

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
                elif key in ("sensitivity_ranking", "sensitivity_bn"):
                    out[key] = str(v)
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
    regime: str = ""  # "" when this run can test the claim; else why not, in numbers (verdict: outside the regime)
    decide: str = ""  # for an undecided verdict: which comparison is inside the noise, and what would decide it
    readings: Mapping[str, str] = field(default_factory=dict)  # open-choice reading -> its verdict (robustness)


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


def _test_size(df: pd.DataFrame) -> float:
    """The test-set size the compared accuracies were measured on (the smallest, the noisiest); unrecorded: the
    interval could not include the test set's noise, so the claim cannot be judged."""
    sizes = pd.to_numeric(df["test_size"], errors="coerce") if "test_size" in df else pd.Series(dtype=float)
    if sizes.isna().all():
        raise Missing("the runs record no test-set size (test_size), so no interval can include the test set's "
                      "own noise: rerun them with this version, or rebuild the runs table")
    return float(sizes.min())


def _gaps(at: pd.DataFrame, methods: Sequence[str], column: str, d: float, trained: bool = True) -> list[str]:
    """The compared runs at one density that give no value: diverged (`trained`: the value comes from training)
    or with no value recorded, and seeds some compared method has a run for but this one lacks. Named in the
    verdict, never silently dropped."""
    at = at[at["method"].isin(methods)]
    seeds = set(at["seed"].map(_seed))
    notes = []
    for m in methods:
        rows = at[at["method"] == m]
        ran = set(rows["seed"].map(_seed))
        diverged = (rows["diverged"].map(_truth) if trained and "diverged" in rows
                    else pd.Series(False, index=rows.index))
        failed = sorted(set(rows.loc[diverged | rows[column].isna(), "seed"].map(_seed)), key=str)
        lacking = sorted(seeds - ran, key=str)
        if failed:
            notes.append(f"{m} at density {d:.4g} diverged or has no {column} at seed{'s' * (len(failed) > 1)} "
                         f"{_seeds(failed)}")
        if lacking:
            notes.append(f"{m} at density {d:.4g} has no run at seed{'s' * (len(lacking) > 1)} {_seeds(lacking)}")
    return notes


def _truth(v: Any) -> bool:
    return str(v).strip().lower() in ("true", "1", "1.0", "yes")


def _gt(label: str, iv: Interval, outcome: str, floor: float = 0.0) -> dict:
    """A comparison "above 0 (by at least floor)", for `decide`."""
    return {"label": label, "iv": iv, "outcome": outcome, "effect": abs(iv.mean), "floor": floor}


def _eq(label: str, iv: Interval, outcome: str, margin: float) -> dict:
    """A comparison "within ±margin", for `decide`: its effect is the room left inside the margin."""
    return {"label": label, "iv": iv, "outcome": outcome, "effect": margin - abs(iv.mean), "floor": margin}


def _finding(parts: Sequence[str] | str, measured: str, numbers: list[dict], comparisons: Sequence[dict] = (),
             gaps: Sequence[str] = ()) -> Finding:
    """The verdict from the parts (or a verdict), with the runs a comparison lacks named (a verdict that would
    rest on the survivors is inconclusive) and, when undecided, what would decide it."""
    verdict = parts if isinstance(parts, str) else _verdict(parts)
    if gaps:
        measured += "; missing or diverged: " + "; ".join(gaps)
        if verdict == REPRODUCED:
            verdict = INCONCLUSIVE
            measured += " (reproduced on the surviving runs only, so not reproduced as a whole)"
    decide = _decide(comparisons, gaps) if verdict == INCONCLUSIVE else ""
    return Finding(verdict, measured, numbers, decide=decide)


def _decide(comparisons: Sequence[dict], gaps: Sequence[str]) -> str:
    """Which comparison is undecided and about how many seeds would decide it (stats.seeds_to_decide)."""
    text = []
    for c in comparisons:
        label, iv, outcome = c["label"], c["iv"], c["outcome"]
        if outcome == stats.ONE_SEED:
            text.append(f"{label}: one seed, no spread measured (≥ 3 seeds would give one)")
        elif outcome == stats.NO_DATA:
            text.append(f"{label}: no seed to compare")
        elif outcome == stats.WITHIN_FLOOR:
            text.append(f"{label} {iv.describe(signed=True)} is clear of 0 but below the effect-size floor "
                        f"{c['floor']:g}: more seeds would not make it material")
        elif outcome == stats.WITHIN_NOISE:
            text.append(f"{label} {iv.describe(signed=True)} is inside the noise; " + _seeds_needed(iv, c["effect"]))
    if gaps:
        text.append("rerunning the missing or diverged runs named above")
    return "; ".join(text)


def _seeds_needed(iv: Interval, effect: float) -> str:
    n = stats.seeds_to_decide(iv, effect)
    noise = f"; the test set's own noise is ±{1.96 * math.sqrt(iv.extra_var):.3g}" if iv.extra_var else ""
    if n is None:
        return "no effect to resolve (the mean sits on what would decide it)"
    if math.isinf(n):
        return f"no number of seeds would decide it at effect {effect:.3g}{noise}: a larger test set would"
    return f"about {n:.0f} seeds would decide it (sd {iv.sd:.3g}, effect {effect:.3g}{noise})"


# ---------------------------------------------------------------------------------------- the tests
def c1(layers: pd.DataFrame, options: ClaimOptions) -> Finding:
    """Layers table (width_ratio per run and layer). At the lowest density where phew and synflow-l2 both have
    runs: per seed, a run's narrowest layer is its minimum width_ratio over layers; the difference phew −
    synflow-l2 (paired by seed) is above 0 and its mean at least structural_floor (a smaller gap is no bottleneck:
    undecided). Structural: with one seed the difference itself decides, against the same floor."""
    _need(layers, ["width_ratio"], "layers")
    layers = _plain(layers)
    methods = ["phew", "synflow-l2"]
    d = _lowest_common_density(layers, methods)
    at = layers[layers["density"] == d]
    gaps = _gaps(at, methods, "width_ratio", d, trained=False)
    narrow = {m: _per_seed(at[at["method"] == m], "width_ratio", "min") for m in methods}
    diff = stats.difference(narrow["phew"], narrow["synflow-l2"])
    floor = options.structural_floor
    outcome = stats.outcome_greater(diff, point_decides=True, floor=floor)
    ivs = {m: stats.t_interval(v) for m, v in narrow.items()}
    numbers = [_num("narrowest width_ratio", m, d, iv) for m, iv in ivs.items()]
    numbers.append(_num("difference", "phew − synflow-l2", d, diff, "narrowest width_ratio"))
    measured = (f"narrowest layer's width_ratio at density {d:.4g}: phew {ivs['phew'].describe()}, synflow-l2 "
                f"{ivs['synflow-l2'].describe()}; phew − synflow-l2 {diff.describe(signed=True)} (floor "
                f"{floor:g}): {outcome}")
    return _finding([stats.part(outcome)], measured, numbers,
                    [_gt("phew − synflow-l2 (narrowest width_ratio)", diff, outcome, floor)], gaps)


def _log_traces(at: pd.DataFrame, methods: Sequence[str]) -> dict[str, dict]:
    """{method: {seed: log10 trace}}, a trace of 0 (no input–output path) as −inf: kept, never dropped."""
    trace = {m: _per_seed(at[at["method"] == m], "init_path_kernel_trace") for m in methods}
    return {m: {s: math.log10(v) if v > 0 else -math.inf for s, v in t.items()} for m, t in trace.items()}


def _trace_part(per_seed: dict, at_least: float, floor: float) -> tuple[str, Interval, list, list]:
    """A per-seed log-trace comparison that must be ≥ at_least: seeds where a zero trace of the claim's own side
    makes it −inf (or undefined) count against it; seeds where only the other side's trace is 0 (+inf) for it.
    The finite seeds are judged as a structural comparison (one seed: its value decides)."""
    finite = {s: v for s, v in per_seed.items() if math.isfinite(v)}
    against = sorted(s for s, v in per_seed.items() if not math.isfinite(v) and not v > 0)
    for_ = sorted(s for s, v in per_seed.items() if v == math.inf)
    iv = stats.t_interval(finite, kind="paired")
    if against:
        return stats.BELOW, iv, against, for_
    if not finite:
        return (stats.ABOVE if for_ else stats.NO_DATA), iv, against, for_
    return stats.outcome_greater(stats.shifted(iv, at_least), point_decides=True, floor=floor), iv, against, for_


def c2(runs: pd.DataFrame, options: ClaimOptions) -> Finding:
    """Runs table (init_path_kernel_trace: the path-kernel trace T of the network as training starts). At the
    lowest density where phew, random and synflow-l2 all have runs, with L = log10 T per seed (a trace of 0, no
    input–output path, is L = −∞: it counts against its method and is never dropped): (a) far above: L(phew) −
    L(random) − min_trace_gap_decades above 0 (phew at least that many decades above random); (b) nearer
    SynFlow-L2's than random's, on its own: per seed |L(phew) − L(random)| − |L(phew) − L(synflow-l2)| above 0
    with a mean of at least trace_floor_decades. A seed where phew (or, in (b), synflow-l2) has trace 0 contradicts
    the part; a seed where only random has trace 0 supports it. Structural: with one seed the value decides."""
    _need(runs, ["init_path_kernel_trace"], "runs")
    runs = _plain(runs)
    methods = ["phew", "random", "synflow-l2"]
    d = _lowest_common_density(runs[runs["init_path_kernel_trace"].notna()], methods, "runs with a path-kernel trace")
    gaps = _gaps(runs[runs["density"] == d], methods, "init_path_kernel_trace", d, trained=False)
    at = runs[(runs["density"] == d) & runs["init_path_kernel_trace"].notna()]
    logs = _log_traces(at, methods)
    p, r, s2 = logs["phew"], logs["random"], logs["synflow-l2"]
    gap, floor = options.min_trace_gap_decades, options.trace_floor_decades
    a = {s: p[s] - r[s] if math.isfinite(p[s]) else -math.inf for s in sorted(set(p) & set(r))}
    b = {s: (abs(p[s] - r[s]) - abs(p[s] - s2[s])) if math.isfinite(p[s]) and math.isfinite(s2[s]) else -math.inf
         for s in sorted(set(p) & set(r) & set(s2))}
    oa, above, against_a, for_a = _trace_part(a, gap, 0.0)
    ob, nearer, against_b, for_b = _trace_part(b, 0.0, floor)
    zero = {m: sorted(s for s, v in t.items() if v == -math.inf) for m, t in logs.items()}
    numbers = [_num("log10 trace", m, d, stats.t_interval({s: v for s, v in t.items() if math.isfinite(v)}),
                    "positive traces") for m, t in logs.items()]
    numbers += [_count("seeds with trace 0", m, d, z) for m, z in zero.items() if z]
    numbers += [_num("difference", "phew − random", d, above, f"log10 trace (decades), ≥ {gap:g} wanted"),
                _num("difference", "dist(phew, random) − dist(phew, synflow-l2)", d, nearer, "log10 trace (decades)")]
    notes = [f"{m} has trace 0 (no input–output path) at seed{'s' if len(z) > 1 else ''} {_seeds(z)}, counted "
             f"{'for' if m == 'random' else 'against'} the claim" for m, z in zero.items() if z]
    measured = (f"log10 trace at density {d:.4g}: PHEW − random {above.describe('.2f', True)} decades (≥ {gap:g} "
                f"wanted): {oa}; PHEW's distance to random minus its distance to SynFlow-L2 "
                f"{nearer.describe('.2f', True)} decades (floor {floor:g}): {ob}" + "".join(f"; {n}" for n in notes))
    return _finding([stats.part(oa), stats.part(ob)], measured, numbers,
                    [_gt(f"phew − random − {gap:g} decades", stats.shifted(above, gap), oa),
                     _gt("dist(phew, random) − dist(phew, synflow-l2)", nearer, ob, floor)], gaps)


def c3(runs: pd.DataFrame, options: ClaimOptions) -> Finding:
    """Runs table (final_test_acc, test_size). At every density ≤ claim_density_max where phew, synflow and
    synflow-l2 all have runs: the test-accuracy differences phew − synflow and phew − synflow-l2, paired by seed,
    their intervals widened by the test set's binomial noise. A density is a win if both are above 0, a loss if
    either is below 0. Of n such densities: reproduced if wins > n/2; not reproduced if n − losses ≤ n/2 (a
    majority of wins is impossible); else inconclusive. With one seed no density is a win or a loss. A diverged or
    missing run of a compared method is named, and a verdict that would rest on the survivors is inconclusive."""
    _need(runs, ["final_test_acc"], "runs")
    runs = _plain(runs)
    methods = ["phew", "synflow", "synflow-l2"]
    low = runs[runs["density"] <= options.claim_density_max * (1 + 1e-9)]
    try:
        densities = _common_densities(low, methods, f"runs at density ≤ {options.claim_density_max:g}")
    except Missing:
        _common_densities(runs, methods)  # names a method with no runs at all, if that is what is missing
        raise
    n_test = _test_size(low[low["method"].isin(methods)])
    tally, numbers, margins, undecided, gaps = [0, 0], [], [], [], []
    for d in densities:
        at = runs[runs["density"] == d]
        gaps += _gaps(at, methods, "final_test_acc", d)
        outcomes = _accuracy_vs(at, "phew", ["synflow", "synflow-l2"], n_test, d, numbers, margins, undecided)
        tally[0] += all(o == stats.ABOVE for o in outcomes)
        tally[1] += any(o == stats.BELOW for o in outcomes)
    (wins, losses), n = tally, len(densities)
    verdict = REPRODUCED if wins > n / 2 else NOT_REPRODUCED if n - losses <= n / 2 else INCONCLUSIVE
    measured = (f"{wins} win(s), {losses} loss(es) of {n} densit{'y' if n == 1 else 'ies'} ≤ "
                f"{options.claim_density_max:g} ({n_test:,.0f} test images); " + "; ".join(margins))
    return _finding(verdict, measured, numbers, undecided, gaps)


def _accuracy_vs(at: pd.DataFrame, method: str, others: Sequence[str], n_test: float, d: float, numbers: list,
                 margins: list, undecided: list, detail: str = "final_test_acc") -> list[str]:
    """acc(method) − acc(other) for each other at one density (test-set noise included): their outcomes; the
    intervals go to `numbers`, the texts to `margins`, the comparisons to `undecided` (for `decide`)."""
    acc = {m: _per_seed(at[at["method"] == m], "final_test_acc") for m in (method, *others)}
    numbers += [_num("final_test_acc", m, d, stats.t_interval(v), detail) for m, v in acc.items()]
    outcomes = []
    for other in others:
        diff = stats.accuracy_difference(acc[method], acc[other], n_test)
        outcomes.append(stats.outcome_greater(diff, point_decides=False))
        numbers.append(_num("difference", f"{method} − {other}", d, diff, detail))
        margins.append(f"d={d:.4g} {method} − {other} {diff.describe(signed=True)} {outcomes[-1]}")
        undecided.append(_gt(f"{method} − {other} at density {d:.4g}", diff, outcomes[-1]))
    return outcomes


def _majority(wins: int, losses: int, n: int) -> str:
    """A part over n densities: holds with a majority of wins, contradicted when one is impossible, else open."""
    return stats.HOLDS if wins > n / 2 else stats.CONTRADICTED if n - losses <= n / 2 else stats.OPEN


def c4(runs: pd.DataFrame, options: ClaimOptions) -> Finding:
    """Runs table (final_test_acc, test_size), re-initialised runs only (variant reinit, structure never frozen),
    accuracy intervals widened by the test set's binomial noise. (a) At every density where imp and
    random-like-imp (random wiring with IMP's per-layer counts) both have runs: acc(imp) − acc(random-like-imp),
    paired by seed, is equivalent within ±equivalence_margin; all equivalent: the part holds, any different:
    contradicted. (b) At every density where random, dnw and rigl all have runs (they share the same layer
    allocation by construction, so random is their fair comparator): a density is a win if dnw − random and
    rigl − random are both above 0, a loss if either is below 0; the part holds with a majority of wins and is
    contradicted when a majority is impossible (as C3). Diverged or missing compared runs are named, and a verdict
    that would rest on the survivors is inconclusive."""
    _need(runs, ["final_test_acc"], "runs")
    reinit = _unfrozen(_variant(runs, "reinit"))
    what = "re-initialised runs"
    like = _common_densities(reinit, ["imp", "random-like-imp"], what)
    dens_b = _common_densities(reinit, ["random", "dnw", "rigl"], what)
    n_test = _test_size(reinit)
    margin = options.equivalence_margin
    numbers, text_a, outcomes_a, undecided, gaps = [], [], [], [], []
    for d in like:
        at = reinit[reinit["density"] == d]
        gaps += _gaps(at, ["imp", "random-like-imp"], "final_test_acc", d)
        a = {m: _per_seed(at[at["method"] == m], "final_test_acc") for m in ("imp", "random-like-imp")}
        numbers += [_num("final_test_acc", m, d, stats.t_interval(v), "reinit") for m, v in a.items()]
        diff = stats.accuracy_difference(a["imp"], a["random-like-imp"], n_test)
        outcomes_a.append(stats.equivalence(diff, margin))
        numbers.append(_num("difference", "imp − random-like-imp", d, diff, "final_test_acc, reinit"))
        text_a.append(f"d={d:.4g} {diff.describe(signed=True)} {outcomes_a[-1]}")
        undecided.append(_eq(f"imp − random-like-imp at density {d:.4g} (±{margin:g})", diff, outcomes_a[-1],
                             margin))
    part_a = (stats.CONTRADICTED if stats.DIFFERENT in outcomes_a
              else stats.HOLDS if all(o == stats.EQUIVALENT for o in outcomes_a) else stats.OPEN)
    wins = losses = 0
    text_b = []
    for d in dens_b:
        at = reinit[reinit["density"] == d]
        gaps += _gaps(at, ["random", "dnw", "rigl"], "final_test_acc", d)
        outcomes = _accuracy_vs(at, "dnw", ["random"], n_test, d, numbers, text_b, undecided, "final_test_acc, reinit")
        outcomes += _accuracy_vs(at, "rigl", ["random"], n_test, d, numbers, text_b, undecided,
                                 "final_test_acc, reinit")
        wins += all(o == stats.ABOVE for o in outcomes)
        losses += any(o == stats.BELOW for o in outcomes)
    part_b = _majority(wins, losses, len(dens_b))
    measured = (f"({n_test:,.0f} test images) (a) imp − random-like-imp vs the equivalence margin ±{margin:g}: "
                + "; ".join(text_a)
                + f". (b) {wins} win(s), {losses} loss(es) of {len(dens_b)} densities: " + "; ".join(text_b))
    return _finding([part_a, part_b], measured, _dedupe(numbers), undecided, gaps)


def _dedupe(numbers: list[dict]) -> list[dict]:
    """Number rows without repeats (an accuracy row written once per comparison it enters)."""
    seen, out = set(), []
    for n in numbers:
        key = (n["quantity"], n["method"], n["density"], n["detail"])
        if key not in seen:
            seen.add(key)
            out.append(n)
    return out


def _bool(series: pd.Series) -> pd.Series:
    if series.dtype == bool:
        return series
    return series.astype(str).str.strip().str.lower().isin(["true", "1", "1.0", "yes"])


SENSITIVITY_READINGS = {"ranking": ("global", "layer"), "bn": ("stale", "recalibrated")}  # C5/C5b's open choices


def reading_name(ranking: str, bn: str) -> str:
    """A reading of the sensitivity curves' open choices, as Finding.readings names it: "ranking=R, bn=B"."""
    return f"ranking={ranking}, bn={bn}"


def _sensitivity(sens: pd.DataFrame, options: ClaimOptions) -> tuple[pd.DataFrame, float]:
    """The original, unfrozen curves (with their reading: ranking, bn) and the density C5 and C5b are judged at.
    A table without a ranking column predates the per-layer reading: its curves ranked globally."""
    _need(sens, ["mode", "bn_recalibrated", "fraction", "test_acc"], "sensitivity")
    if "num_classes" not in sens:
        raise Missing("the sensitivity table has no num_classes column (the chance level): rebuild it "
                      "(python -m sparsenets table --kind sensitivity)")
    recal = _bool(sens["bn_recalibrated"])
    ranking = sens["ranking"].fillna("global").astype(str) if "ranking" in sens else "global"
    sens = _plain(sens.assign(bn_recalibrated=recal, ranking=ranking, bn=recal.map({False: "stale",
                                                                                    True: "recalibrated"})))
    if sens.empty:
        raise Missing("no sensitivity curves of original, unfrozen runs")
    densities = sorted(sens["density"].unique())
    if options.focus_density is not None:
        focus = options.focus_density
        d = min(densities, key=lambda x: abs(x - focus))
        if abs(d - focus) > FOCUS_TOLERANCE * focus:
            raise Missing(f"no sensitivity curves at the focus density {focus:.4g} (have "
                          f"{', '.join(f'{x:.4g}' for x in densities)})")
        return sens, float(d)
    usable = [d for d, g in sens.groupby("density")
              if "random" in set(g["method"]) and any(_compared(m) and m != "random" for m in set(g["method"]))]
    if not usable:
        raise Missing("no density with sensitivity curves of random and another method")
    return sens, float(min(usable))


def _compared(method: str) -> bool:
    """random-like-M structures are random wiring too: not compared with random."""
    return not method.startswith("random-like-")


@dataclass(frozen=True)
class _Curves:
    """One reading's normalised curves a(f) per method and seed on the shared fractions `f`, the runs that cannot be
    normalised, and the test-set noise of one a(f) per fraction (0 where the test-set size is not recorded)."""

    f: np.ndarray
    a: dict[str, dict[Any, np.ndarray]]
    unusable: list[str]
    noise: np.ndarray


def _normalised(curves: pd.DataFrame) -> _Curves:
    """Per run (method, seed): a(f) = (acc(f) − chance)/(acc(0) − chance) over the fractions every run has. The
    test-set noise of a(f): p̄(1 − p̄)/n_test/span̄² (p̄, span̄: means over the runs), from column test_size."""
    per_run = curves.groupby(["method", "seed", "fraction"])["test_acc"].mean()
    runs = per_run.groupby(level=[0, 1])
    shared = set.intersection(*(set(g.index.get_level_values(2)) for _, g in runs))
    f = np.array(sorted(shared), dtype=float)
    if len(f) < 2 or f[0] != 0:
        raise Missing("the sensitivity curves share no fraction 0 and a larger fraction")
    chance = 1.0 / curves.groupby(["method", "seed"])["num_classes"].first()
    a: dict[str, dict] = {}
    unusable, accs, spans = [], [], []
    for (method, seed), g in runs:
        acc = g.droplevel([0, 1]).loc[f].to_numpy(dtype=float)
        c = float(chance[(method, seed)])
        span = acc[0] - c
        a.setdefault(method, {})
        if not span >= MIN_SPAN:
            unusable.append(f"{method} seed {_seed(seed)} (acc(0) − chance {span:.3f})")
            continue
        a[method][_seed(seed)] = (acc - c) / span
        accs.append(acc)
        spans.append(span)
    sizes = pd.to_numeric(curves["test_size"], errors="coerce") if "test_size" in curves else pd.Series(dtype=float)
    if sizes.isna().all():
        raise Missing("the sensitivity curves record no test-set size (test_size), so no interval can include the "
                      "test set's own noise: rerun the sensitivity jobs with this version")
    noise = np.zeros(len(f))
    if accs:
        p = np.mean(accs, axis=0)
        noise = np.array([stats.binomial_var(x, float(sizes.min())) for x in p]) / np.mean(spans) ** 2
    return _Curves(f, a, unusable, noise)


def _areas(curves: pd.DataFrame) -> tuple[dict[str, dict], list[str], tuple[float, float]]:
    """Per run (method, seed): area under a(f) (`_normalised`), trapezoid over the fractions every run has, divided
    by (max f − min f). Also the runs that cannot be normalised, and the fraction range."""
    c = _normalised(curves)
    return ({m: {s: _area(c.f, v) for s, v in by_seed.items()} for m, by_seed in c.a.items()}, c.unusable,
            (float(c.f[0]), float(c.f[-1])))


def _area(f: np.ndarray, a: np.ndarray) -> float:
    return float(np.sum((a[1:] + a[:-1]) / 2 * np.diff(f)) / (f[-1] - f[0]))


def _ordered(c: _Curves, m: str, ref: str) -> tuple[str, Interval, list[tuple[float, Interval]], str]:
    """Is m's curve above ref's across the curve? The area difference (paired by seed, widened by the test set's
    noise) decides only when no fraction f > 0 shows the opposite order outside the noise; curves that cross are
    inconclusive. Returns the outcome, the area difference, the fractions where the order is reversed (with their
    pointwise differences) and a note saying so."""
    area = {k: {s: _area(c.f, v) for s, v in c.a[k].items()} for k in (m, ref)}
    diff = stats.difference(area[m], area[ref], extra_var=float(c.noise[1:].max()))
    outcome = stats.outcome_greater(diff, point_decides=False)
    points = [(float(f), stats.difference({s: v[i] for s, v in c.a[m].items()},
                                          {s: v[i] for s, v in c.a[ref].items()}, extra_var=float(c.noise[i])))
              for i, f in enumerate(c.f) if i > 0]
    sides = {p: [(f, iv) for f, iv in points if stats.outcome_greater(iv, False) == p] for p in (stats.ABOVE,
                                                                                             stats.BELOW)}
    opposite = {stats.ABOVE: stats.BELOW, stats.BELOW: stats.ABOVE}.get(outcome)
    crossing = sides[opposite] if opposite else (sides[stats.BELOW] if sides[stats.ABOVE] else [])
    if not crossing:
        return outcome, diff, [], ""
    where = ", ".join(f"{f:g}" for f, _ in crossing)
    side = "below" if crossing[0][1].mean < 0 else "above"
    return (stats.WITHIN_NOISE, diff, crossing,
            f"the curves cross: {m} is {side} {ref} at f = {where}, outside the noise (the area alone does not decide)")


def _judge_reading(curves: pd.DataFrame, pairs: Sequence[tuple[str, str]], d: float, quantity: str
                   ) -> tuple[str, str, list[dict]]:
    """One reading's verdict on `pairs` (each: m above ref across the curve), what was measured, its numbers."""
    c = _normalised(curves)
    needed = sorted({m for p in pairs for m in p})
    span = f"f = {c.f[0]:g}…{c.f[-1]:g}"
    numbers = [_num(quantity, m, d, stats.t_interval({s: _area(c.f, v) for s, v in c.a.get(m, {}).items()}), span)
               for m in needed]
    parts, text = [], []
    for m, ref in pairs:
        outcome, diff, crossing, note = _ordered(c, m, ref)
        parts.append(stats.part(outcome))
        numbers.append(_num("difference", f"{m} − {ref}", d, diff, quantity))
        numbers += [_num("difference", f"{m} − {ref}", d, iv, f"a(f) at f = {f:g}, {quantity}") for f, iv in crossing]
        text.append(f"{m} − {ref} {diff.describe(signed=True)} {note or outcome}")
    notes = ""
    if c.unusable:
        notes += f"; cannot be normalised (acc(0) − chance < {MIN_SPAN:g}): " + ", ".join(c.unusable)
    empty = [m for m in needed if not c.a.get(m)]
    if empty:
        notes += f"; no normalisable seed of {', '.join(empty)}"
    return _verdict(parts), f"({span}) " + "; ".join(text) + notes, numbers


def _area_test(sens: pd.DataFrame, options: ClaimOptions, mode: str, pairs: Sequence[tuple[str, str]] | None,
               label: str) -> Finding:
    sens, d = _sensitivity(sens, options)
    at = sens[(sens["density"] == d) & (sens["mode"] == mode)]
    methods = sorted(set(at["method"]))
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
    configured = reading_name(options.sensitivity_ranking, options.sensitivity_bn)
    at = at[at["method"].isin(needed)]
    judged = {reading_name(r, b): _judge_reading(g, pairs, d, f"area ({label}, {r} ranking, {b} BN)")
              for (r, b), g in at.groupby(["ranking", "bn"])}
    if configured not in judged:
        raise Missing(f"no {mode} curves under the configured reading ({configured}) at density {d:.4g}; have: "
                      f"{'; '.join(judged) or 'none'}")
    verdict, measured, numbers = judged[configured]
    others = {k: v for k, v in judged.items() if k != configured}
    for _, _, more in others.values():
        numbers += [n for n in more if n["quantity"] == "difference"]
    measured = (f"area under the normalised curve ({label}, {configured}) at density {d:.4g} {measured}"
                + "".join(f". Reading {k}: {MARKS[v]} {v}: {m}" for k, (v, m, _) in others.items()))
    return Finding(verdict, measured, numbers, readings={k: v for k, (v, _, _) in judged.items()})


def c5(sens: pd.DataFrame, options: ClaimOptions) -> Finding:
    """Sensitivity table (method, density, seed, mode, ranking, bn_recalibrated, fraction, test_acc, num_classes,
    test_size; chance = 1/num_classes). Further pruning by magnitude, at focus_density (the table's nearest density
    within 0.1 %) or, with none given, the lowest density with curves of random and another method. Per run, the
    normalised curve a(f) = (acc(f) − chance) / (acc(0) − chance) over the fractions every run has, and its area =
    trapezoid over f / (max f − min f) (an untouched network scores 1). A run with acc(0) − chance < 0.02 cannot be
    normalised and is listed. Random structures lose accuracy fastest: for every other method M (random-like-M
    baselines are random structures too and are left out), M's curve lies above random's across the curve:
    area(M) − area(random), paired by seed, is above 0, and at no fraction f > 0 is a_M(f) − a_random(f) below 0
    outside the noise (curves that cross are inconclusive, whatever the area says). Intervals add the test set's
    binomial noise of one a(f) (p̄(1 − p̄)/n_test over span²; for the area its largest value over f). Judged under
    every reading of the open choices (ranking: global or per layer; BN: stale or recalibrated; readings); the
    verdict is the configured reading's (sensitivity_ranking, sensitivity_bn; the paper's protocol: stale BN)."""
    return _area_test(sens, options, "magnitude", None, "magnitude")


def c5b(sens: pd.DataFrame, options: ClaimOptions) -> Finding:
    """Sensitivity table, as C5 (same density, normalised curves, ordering across the curve, readings) but removing
    weights at random (mode random): dnw above rigl, dnw above random, imp above rigl and imp above random, each
    across the curve."""
    pairs = [("dnw", "rigl"), ("dnw", "random"), ("imp", "rigl"), ("imp", "random")]
    return _area_test(sens, options, "random", pairs, "random removal")


def c6(overlap: pd.DataFrame, options: ClaimOptions) -> Finding:
    """Overlap table (per run and epoch: overlap_prev, the share of the previous epoch's kept weights this epoch
    keeps, and overlap_final, the share of this epoch's kept weights the final structure keeps; epoch 0 is DNW's
    structure at init). DNW runs at the lowest density with records. "The majority of the structural changes
    happen in the first epoch": the init→final change is T = 1 − overlap_final(0) (the share of the structure at
    init the final one replaces), the change still to come after epoch 1 is R = 1 − overlap_final(1), and epoch 1
    holds the share 1 − R/T of it; share − 1/2 is above 0 with a mean of at least structural_floor. Structural:
    with one seed the value decides, against the same floor. A run whose structure never changed (T = 0) is named
    and left out. The per-epoch change 1 − overlap_prev(e), as a share of T, is reported, not judged. No epoch-0
    record: not enough runs (the structure at init was not recorded); no epoch after the first: not enough runs."""
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
    if 1 not in epochs or not [e for e in epochs if e > 1]:
        raise Missing(f"dnw at density {d:.4g}: no record of epoch 1 and an epoch after it")

    def col(frame: pd.DataFrame, e: Any) -> dict:
        return {_seed(s): float(v) for s, v in frame[e].dropna().items()}

    total = (1 - final[0]).where(lambda t: t > 0)
    still = [_seed(s) for s, t in (1 - final[0]).items() if not t > 0]
    share = (1 - (1 - final[1]) / total).dropna()
    share_iv = stats.t_interval({_seed(s): float(v) for s, v in share.items()})
    majority = stats.shifted(share_iv, 0.5)
    outcome = stats.outcome_greater(majority, point_decides=True, floor=options.structural_floor)
    change = (1 - prev[[e for e in prev.columns if e >= 1]]).div(total, axis=0)
    numbers = [_num("change share", "dnw", d, share_iv, "epoch 1's share of the init→final change"),
               _num("difference", "dnw", d, majority, "epoch 1's share − 0.5")]
    numbers += [_num("change share", "dnw", d, stats.t_interval(col(change, e)), f"epoch {int(e)}: 1 − overlap_prev")
                for e in change.columns]
    measured = (f"dnw at density {d:.4g}: epoch 1 holds {share_iv.describe()} of the init→final change "
                f"(T = {stats.t_interval(col(1 - final, 0)).describe()}); share − 0.5 "
                f"{majority.describe(signed=True)} (floor {options.structural_floor:g}): {outcome}")
    if still:
        numbers.append(_count("seeds whose structure never changed", "dnw", d, still))
        measured += f"; the structure never changed at seed(s) {_seeds(still)} (left out)"
    return _finding([stats.part(outcome)], measured, numbers,
                    [_gt("epoch 1's share − 0.5", majority, outcome, options.structural_floor)])


def c7(runs: pd.DataFrame, options: ClaimOptions) -> Finding:
    """Runs table (final_test_acc, test_size, freeze_epoch), original weights, accuracy intervals widened by the
    test set's binomial noise. With k = freeze_claim_epoch (≥ 1, below the recipe's epochs: checked before any job
    runs): frozen runs are method dnw-freeze{k} with freeze_epoch = k, the k = 0 baseline is dnw-freeze0, full DNW
    is method dnw never frozen. At the lowest density where all three have runs: (a) acc(frozen k) − acc(full dnw),
    paired by seed, is equivalent within ±equivalence_margin; (b) diminishing returns: per seed (acc_k − acc_0) −
    (acc_full − acc_k) is above 0. k = 0 never stands in for k. A diverged or missing run of the three is named,
    and a verdict that would rest on the survivors is inconclusive."""
    _need(runs, ["final_test_acc"], "runs")
    k = options.freeze_claim_epoch
    original = _variant(runs, "original")

    def frozen(j: int) -> pd.DataFrame:
        rows = original[original["method"] == f"dnw-freeze{j}"]
        return rows[np.isclose(rows["freeze_epoch"].astype(float), j)] if "freeze_epoch" in rows else rows

    full = _unfrozen(original[original["method"] == "dnw"])
    names = {f"dnw-freeze{k}": frozen(k), "dnw-freeze0": frozen(0), "dnw": full}
    d = _lowest_common_density(pd.concat(names.values()), list(names))
    at = pd.concat(t[t["density"] == d] for t in names.values())
    n_test = _test_size(at)
    gaps = _gaps(at, list(names), "final_test_acc", d)
    acc = {m: _per_seed(at[at["method"] == m], "final_test_acc") for m in names}
    a_k, a_0, a_full = acc[f"dnw-freeze{k}"], acc["dnw-freeze0"], acc["dnw"]
    near = stats.accuracy_difference(a_k, a_full, n_test)
    oa = stats.equivalence(near, options.equivalence_margin)
    common = sorted(set(a_k) & set(a_0) & set(a_full))
    p = float(np.mean([v for a in acc.values() for v in a.values()])) if common else math.nan
    diminishing = stats.t_interval({s: (a_k[s] - a_0[s]) - (a_full[s] - a_k[s]) for s in common}, kind="paired",
                                   extra_var=stats.binomial_var(p, n_test))
    ob = stats.outcome_greater(diminishing, point_decides=False)
    numbers = [_num("final_test_acc", m, d, stats.t_interval(v), f"k = {m.removeprefix('dnw-freeze')}"
                    if m != "dnw" else "full DNW") for m, v in acc.items()]
    numbers += [_num("difference", f"dnw-freeze{k} − dnw", d, near, "final_test_acc"),
                _num("difference", "(k − 0) − (full − k)", d, diminishing, f"final_test_acc, k = {k}")]
    measured = (f"at density {d:.4g}, k = {k} ({n_test:,.0f} test images): frozen − full DNW "
                f"{near.describe(signed=True)} (vs the equivalence margin ±{options.equivalence_margin:g}: {oa}); "
                f"gain 0→k minus gain "
                f"k→full {diminishing.describe(signed=True)}: {ob}")
    return _finding([stats.part(oa), stats.part(ob)], measured, numbers,
                    [_eq(f"dnw-freeze{k} − dnw (±{options.equivalence_margin:g})", near, oa,
                         options.equivalence_margin), _gt("(k − 0) − (full − k)", diminishing, ob)], gaps)


Test = Callable[[pd.DataFrame, ClaimOptions], Finding]
TESTS: dict[str, Test] = {"C1": c1, "C2": c2, "C3": c3, "C4": c4, "C5": c5, "C5b": c5b, "C6": c6, "C7": c7}


# ---------------------------------------------------------------------------------------------- regime
PAPER_IMAGES, PAPER_BATCH, PAPER_EPOCHS, PAPER_TEST = 50_000, 128, 160, 10_000  # both papers' CIFAR recipe
PAPER_EPOCH_STEPS = PAPER_IMAGES // PAPER_BATCH  # 390 optimizer steps
Z95 = 1.959963984540054
_RECIPE = f"{PAPER_EPOCHS} epochs of {PAPER_EPOCH_STEPS} steps (batch {PAPER_BATCH}, {PAPER_IMAGES:,} images), " \
          f"{PAPER_TEST:,} test images"
PAPER_SETTINGS = {  # what each claim was shown on (docs/METHODS.md, "Claim regimes")
    **{c: f"PHEW: VGG-19 and ResNet-20 on CIFAR-10/100, {_RECIPE}" for c in ("C1", "C2", "C3")},
    **{c: f"Deconstructing: ResNet-18 on CIFAR-10, {_RECIPE}, ≥ 3 seeds" for c in ("C4", "C5", "C5b", "C6", "C7")},
}


def _recorded(df: pd.DataFrame, column: str, what: str) -> float:
    """The smallest value of a regime column over `df`'s runs; unrecorded: the regime cannot be told."""
    values = pd.to_numeric(df[column], errors="coerce") if column in df else pd.Series(dtype=float)
    if values.isna().all():
        raise Missing(f"the {what} record no {column}, so whether they can test the claim is unknown: rerun them "
                      "with this version, or rebuild the table")
    return float(values.min())


def _steps_regime(df: pd.DataFrame, what: str) -> str:
    """C6, C7: the claim concerns what follows the paper's first epoch (390 steps): the run's epoch must be at
    least that long and the run must train on after it."""
    steps, epochs = _recorded(df, "steps_per_epoch", what), _recorded(df, "epochs", what)
    if steps >= PAPER_EPOCH_STEPS and epochs >= 2:
        return ""
    images = _recorded(df, "train_images", what) if "train_images" in df else math.nan
    return (f"the {what}' epoch is {steps:,.0f} steps ({images:,.0f} images) and the whole run {steps * epochs:,.0f} "
            f"steps ({epochs:.0f} epochs); the claim concerns what follows the paper's first epoch, "
            f"{PAPER_EPOCH_STEPS} steps of {PAPER_BATCH} images ({PAPER_IMAGES:,})")


def _margin_regime(df: pd.DataFrame, margin: float, what: str) -> str:
    """C4, C7: "about as well" within ±margin needs a margin beyond the test set's own noise: z·√(p(1 − p)/n)."""
    n = _recorded(df, "test_size", what)
    p = float(pd.to_numeric(df["final_test_acc"], errors="coerce").mean())
    noise = Z95 * math.sqrt(stats.binomial_var(p, n)) if not math.isnan(p) else 0.0
    if noise < margin:
        return ""
    return (f"the equivalence margin ±{margin:g} is inside the test set's own noise: one accuracy of {p:.3f} on "
            f"{n:,.0f} test images is ±{noise:.3f} (95 %)")


def _regime_c4(runs: pd.DataFrame, options: ClaimOptions) -> str:
    reinit = _unfrozen(_variant(runs, "reinit"))
    return _margin_regime(reinit[reinit["method"].isin(["imp", "random-like-imp"])], options.equivalence_margin,
                          "re-initialised imp runs")


def _regime_c6(overlap: pd.DataFrame, options: ClaimOptions) -> str:
    dnw = _plain(overlap[overlap["method"] == "dnw"])
    return _steps_regime(dnw, "dnw runs") if not dnw.empty else ""


def _regime_c7(runs: pd.DataFrame, options: ClaimOptions) -> str:
    dnw = _variant(runs, "original")
    dnw = dnw[dnw["method"].astype(str).str.match(r"^dnw(-freeze\d+)?$")]
    if dnw.empty:
        return ""
    k, epochs = options.freeze_claim_epoch, _recorded(dnw, "epochs", "dnw runs")
    if k >= epochs:
        return (f"k = {k} is not below the runs' {epochs:.0f} epochs: DNW frozen after all its epochs is full DNW, "
                f"so the claim would compare DNW with itself")
    return _steps_regime(dnw, "dnw runs") or _margin_regime(dnw, options.equivalence_margin, "dnw runs")


RegimeRule = Callable[[pd.DataFrame, ClaimOptions], str]
REGIMES: dict[str, RegimeRule] = {"C4": _regime_c4, "C6": _regime_c6, "C7": _regime_c7}  # others: any run


def _setting(table: pd.DataFrame) -> str:
    """This run's setting, as the paper's is spelled: network, epochs of steps (images), test images, seeds."""
    first = table.iloc[0]
    text = f"{first['model']} on {first['dataset']}"

    def known(c: str) -> float | None:
        v = pd.to_numeric(table[c], errors="coerce").dropna() if c in table else pd.Series(dtype=float)
        return float(v.max()) if len(v) else None

    epochs, steps, images, test = (known(c) for c in ("epochs", "steps_per_epoch", "train_images", "test_size"))
    if epochs is not None:
        text += f", {epochs:.0f} epochs" + (f" of {steps:,.0f} steps" if steps is not None else "")
        text += f" ({images:,.0f} images)" if images is not None else ""
    if test is not None:
        text += f", {test:,.0f} test images"
    n = table["seed"].nunique() if "seed" in table else 0
    return text + f", {n} seed{'s' * (n != 1)}"


def _robustness(found: Finding) -> str:
    """"robust" when every reading of the open choices gives the verdict; else the choices it depends on, each
    reading's verdict. Reading keys are "choice=value" pairs joined by ", " (sparsenets.sensitivity)."""
    if not found.readings:
        return ""
    if all(v == found.verdict for v in found.readings.values()):
        return f"robust ({len(found.readings)} readings)"
    parsed = {key: dict(p.split("=", 1) for p in key.split(", ") if "=" in p) for key in found.readings}
    choices = sorted({c for pairs in parsed.values() for c in pairs})
    matters = [c for c in choices if len({frozenset(v for k, v in found.readings.items() if parsed[k].get(c) == val)
                                          for val in {p.get(c) for p in parsed.values()}}) > 1]
    spelled = ", ".join(f"{k}: {MARKS.get(v, '?')} {v}" for k, v in found.readings.items())
    return f"depends on {' and '.join(matters) or 'the reading'} ({spelled})"




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
        sub = table[network == net]
        try:
            found = test(sub, options)
        except Missing as e:
            found = Finding(NOT_ENOUGH, str(e))
        rows.append(_row(study, cid, net, _in_regime(cid, sub, options, found), _setting(sub)))
    return rows


def _in_regime(cid: str, table: pd.DataFrame, options: ClaimOptions, found: Finding) -> Finding:
    """The finding, or the fifth verdict when this run cannot test the claim (what was measured is kept)."""
    if found.regime or cid not in REGIMES:
        return found if not found.regime else replace(found, verdict=OUTSIDE, decide="")
    try:
        reason = REGIMES[cid](table, options)
    except Missing as e:
        return replace(found, verdict=NOT_ENOUGH, measured=f"{e}; {found.measured}", decide="")
    return replace(found, verdict=OUTSIDE, regime=reason, decide="") if reason else found


def _row(study: str, cid: str, network: str, found: Finding, setting: str = "") -> dict:
    extra = {"regime": found.regime, "robustness": _robustness(found), "decide": found.decide, "claim": CLAIMS[cid],
             "measured": found.measured, "paper": PAPER_SETTINGS[cid], "setting": setting}
    numbers = [{"study": study, "id": cid, "network": network, "verdict": found.verdict, **n} for n in found.numbers]
    return {"study": study, "id": cid, "network": network, "verdict": found.verdict, "numbers": numbers, **extra,
            "readings": dict(found.readings)}


def numbers_frame(claims: Sequence[dict]) -> pd.DataFrame:
    """The tidy number rows of every verdict; a verdict with no numbers gets one row with empty quantity."""
    rows = []
    for c in claims:
        said = {"study": c["study"], "id": c["id"], "network": c["network"], "verdict": c["verdict"],
                **{k: c.get(k, "") for k in VERDICT_COLUMNS}}
        rows += [{**n, **said} for n in c.get("numbers") or [{}]]
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


def regime_cell(c: Mapping[str, Any]) -> str:
    """The regime (🔭 and why, or 'in regime'), then the paper's setting and this run's."""
    head = f"🔭 {c['regime']}" if c.get("regime") else "in regime"
    return f"{head}. Paper: {c.get('paper', '')}. This run: {c.get('setting') or '–'}"


def _matrix(claims: list[dict]) -> list[str]:
    """Claim × study, when several studies (variants of one protocol) judge the same claim."""
    studies = {}
    for c in claims:
        studies.setdefault((c["id"], c["network"]), {})[c["study"]] = c
    several = {k: v for k, v in studies.items() if len(v) > 1}
    if not several:
        return []
    names = list(dict.fromkeys(c["study"] for c in claims if (c["id"], c["network"]) in several))
    lines = ["## The studies side by side", "", "Variant studies of one protocol differ in one open choice (their "
             "config blocks); a claim whose verdict changes between them depends on that choice.", "",
             "| Claim | Network | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for (cid, net), by in several.items():
        cells = [f"{MARKS[by[n]['verdict']]} {by[n]['verdict']}" if n in by else "–" for n in names]
        lines.append(f"| **{cid}** | {net or '–'} | " + " | ".join(cells) + " |")
    return lines + [""]


def write(claims: list[dict], md_path: str | os.PathLike, csv_path: str | os.PathLike, *, preset: str = "",
          tables: Sequence[str] = (), options: Mapping[str, Mapping[str, Any]] | None = None,
          provenance: str = "") -> None:
    """The verdicts as a table to read at a glance (each with its regime, the paper's setting beside the run's, and
    its robustness to the open choices), the studies side by side, each claim's numbers and what would decide an
    undecided one, and how each claim is tested (markdown); the tidy numbers as CSV (NUMBER_COLUMNS, the verdict,
    regime and robustness on each row). Both written atomically. `options`: study -> its claim options;
    `provenance`: a paragraph saying where the results came from (sparsenets.provenance)."""
    counts = ", ".join(f"{MARKS[v]} {sum(c['verdict'] == v for c in claims)} {v}" for v in VERDICTS)
    source = (f"preset `{preset}`" if preset else "this preset") + (
        ", from " + ", ".join(f"`{t}`" for t in tables) if tables else "")
    lines = ["# Claims C1–C7 and C5b of the two papers", "",
             f"Verdicts on {source}: {counts} (one row per study, claim and network).", ""]
    lines += [provenance, ""] if provenance else []  # commit, data digests (sparsenets.provenance.markdown)
    if options:
        lines += ["Options: " + "; ".join(f"{study}: " + (", ".join(f"{k} = {v}" for k, v in values.items()) or "defaults")
                                          for study, values in options.items()) + ".", ""]
    lines += ["| Study | Claim | Network | Verdict | Regime (paper · this run) | Robustness | Measured |",
              "|---|---|---|---|---|---|---|"]
    lines += [f"| {c['study']} | **{c['id']}** {_cell(c['claim'])} | {c['network'] or '–'} | {MARKS[c['verdict']]} "
              f"{c['verdict']} | {_cell(regime_cell(c))} | {_cell(c.get('robustness') or '–')} | "
              f"{_cell(c['measured'])}" + (f" **To decide:** {_cell(c['decide'])}" if c.get("decide") else "") + " |"
              for c in claims]
    lines += ["", *_matrix(claims), "## The numbers behind each verdict", ""]
    for c in claims:
        lines += [f"### {c['id']} · {c['network'] or '–'} · {c['study']}", "", f"{MARKS[c['verdict']]} {c['verdict']}: "
                  f"{c['measured']}", ""]
        lines += [f"*What would decide it:* {c['decide']}", ""] if c.get("decide") else []
        lines += [f"*Regime:* {regime_cell(c)}", ""]
        if c.get("robustness"):
            lines += [f"*Robustness:* {c['robustness']}", ""]
        if c.get("numbers"):
            lines += ["| quantity | method | density | detail | mean [95 % CI] | seeds |", "|---|---|---|---|---|---|"]
            lines += [f"| {_cell(n['quantity'])} | {_cell(n['method'])} | {_fmt(n['density'])} | {_cell(n['detail'])} "
                      f"| {_ci_cell(n)} | {n['seeds'] or '–'} |" for n in c["numbers"]]
            lines.append("")
    lines += ["## How each claim is tested", "", RULES, "", "The methods, experiments, choices and regime rules "
              f"behind these tests: `{METHODS_DOC}` in the sparsenets repository.", ""]
    lines += [f"- **{cid}** {CLAIMS[cid]} *Test:* " + " ".join(inspect.cleandoc(test.__doc__).split())
              for cid, test in TESTS.items()]
    write_text(md_path, "\n".join(lines) + "\n")
    write_text(csv_path, numbers_frame(claims).to_csv(index=False, float_format="%.6g"))
