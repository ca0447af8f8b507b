"""Seed statistics the claims are judged with (README, "Claims and verdicts").

Every quantity is measured once per seed; a method is summarised by its mean over seeds and a 95 % t-interval,
and two methods are compared through the interval of their difference, paired by seed where the runs share
seeds (same seed: same data order and initialisation), else Welch's. Pure numpy/scipy: no torch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Hashable, Iterable, Mapping

import numpy as np
from scipy import stats as _scipy

LEVEL = 0.95

# outcomes of a comparison
ABOVE, BELOW, WITHIN_NOISE, ONE_SEED, NO_DATA = "above", "below", "within noise", "one seed", "no data"
EQUIVALENT, DIFFERENT = "equivalent", "different"
# what an outcome means for the part of a claim it tests
HOLDS, CONTRADICTED, OPEN = "holds", "contradicted", "open"

Values = Mapping[Hashable, float]  # seed -> value


@dataclass(frozen=True)
class Interval:
    """Mean over seeds and its 95 % interval; n = 1 gives low = high = nan, n = 0 (nothing measured) a nan mean.
    `kind`: "t" (one quantity), "paired" (a per-seed difference) or "welch" (a difference of two means)."""

    mean: float
    low: float
    high: float
    n: int
    seeds: tuple = ()
    kind: str = "t"

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2 if self.n >= 2 else math.nan

    def describe(self, fmt: str = ".3f", signed: bool = False) -> str:
        """"+0.012 ± 0.004 (3 seeds)"; one seed: "+0.012 (1 seed)"."""
        if self.n == 0 or math.isnan(self.mean):
            return "no seed to compare"
        sign = "+" if signed else ""
        text = f"{self.mean:{sign}{fmt}}"
        if self.n >= 2:
            text += f" ± {self.half_width:{fmt}}"
        welch = ", Welch" if self.kind == "welch" else ""
        return f"{text} ({self.n} seed{'s' if self.n != 1 else ''}{welch})"


def _clean(values: Values | Iterable[float]) -> dict:
    items = values.items() if isinstance(values, Mapping) else enumerate(values)
    return {k: float(v) for k, v in items if v is not None and not math.isnan(float(v))}


def _sorted_seeds(keys: Iterable[Hashable]) -> tuple:
    keys = list(keys)
    try:
        return tuple(sorted(keys))
    except TypeError:
        return tuple(sorted(keys, key=str))


def t_quantile(df: float) -> float:
    """t_{0.975, df}."""
    return float(_scipy.t.ppf(0.5 + LEVEL / 2, df))


def t_interval(values: Values | Iterable[float], kind: str = "t") -> Interval:
    """Mean ± t_{0.975, n−1}·sd/√n (sd with ddof = 1) over seeds; NaN values count as not measured."""
    v = _clean(values)
    seeds = _sorted_seeds(v)
    x = np.array([v[s] for s in seeds], dtype=float)
    n = len(x)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0, (), kind)
    mean = float(x.mean())
    if n == 1:
        return Interval(mean, math.nan, math.nan, 1, seeds, kind)
    half = t_quantile(n - 1) * float(x.std(ddof=1)) / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n, seeds, kind)


def welch_interval(a: Values, b: Values) -> Interval:
    """Interval of mean(a) − mean(b) for unpaired samples (Welch–Satterthwaite degrees of freedom);
    n is the smaller sample size, seeds the union."""
    a, b = _clean(a), _clean(b)
    na, nb = len(a), len(b)
    seeds = _sorted_seeds(set(a) | set(b))
    if na == 0 or nb == 0:
        return Interval(math.nan, math.nan, math.nan, 0, (), "welch")
    xa, xb = np.array(list(a.values())), np.array(list(b.values()))
    mean = float(xa.mean() - xb.mean())
    if min(na, nb) < 2:
        return Interval(mean, math.nan, math.nan, 1, seeds, "welch")
    va, vb = float(xa.var(ddof=1)) / na, float(xb.var(ddof=1)) / nb
    se = math.sqrt(va + vb)
    if se == 0:
        return Interval(mean, mean, mean, min(na, nb), seeds, "welch")
    df = (va + vb) ** 2 / (va**2 / (na - 1) + vb**2 / (nb - 1))
    half = t_quantile(df) * se
    return Interval(mean, mean - half, mean + half, min(na, nb), seeds, "welch")


def difference(a: Values, b: Values, paired: bool | None = None) -> Interval:
    """Interval of a − b from two {seed: value} mappings. Paired by seed over the seeds both have when
    there are two or more of them (or when Welch is impossible); else Welch. paired=True forces pairing
    (no common seed: n = 0), paired=False forces Welch."""
    a, b = _clean(a), _clean(b)
    common = _sorted_seeds(set(a) & set(b))
    if paired is None:
        paired = len(common) >= 2 or (bool(common) and min(len(a), len(b)) < 2)
    if paired:
        return t_interval({s: a[s] - b[s] for s in common}, kind="paired")
    return welch_interval(a, b)


def outcome_greater(diff: Interval, point_decides: bool) -> str:
    """Is the difference above 0? "above" if its interval lies above 0, "below" if below, else "within
    noise". One seed: the sign of the mean decides when `point_decides` (structural measurements,
    deterministic given the seed), else "one seed". Nothing to compare: "no data"."""
    if diff.n == 0 or math.isnan(diff.mean):
        return NO_DATA
    if diff.n == 1:
        if not point_decides:
            return ONE_SEED
        return ABOVE if diff.mean > 0 else BELOW if diff.mean < 0 else WITHIN_NOISE
    if diff.low > 0:
        return ABOVE
    if diff.high < 0:
        return BELOW
    return WITHIN_NOISE


def equivalence(diff: Interval, margin: float) -> str:
    """"equivalent" if the interval lies inside (−margin, margin), "different" if it lies wholly beyond
    ±margin, else "within noise"; one seed: "one seed"; nothing to compare: "no data"."""
    if diff.n == 0 or math.isnan(diff.mean):
        return NO_DATA
    if diff.n == 1:
        return ONE_SEED
    if -margin < diff.low and diff.high < margin:
        return EQUIVALENT
    if diff.low > margin or diff.high < -margin:
        return DIFFERENT
    return WITHIN_NOISE


def part(outcome: str) -> str:
    """What an outcome means for the part of a claim that expects "above" or "equivalent"."""
    if outcome in (ABOVE, EQUIVALENT):
        return HOLDS
    if outcome in (BELOW, DIFFERENT):
        return CONTRADICTED
    return OPEN


def combine(parts: Iterable[str]) -> str:
    """All parts hold → HOLDS; any part contradicted → CONTRADICTED; else OPEN."""
    parts = list(parts)
    if parts and all(p == HOLDS for p in parts):
        return HOLDS
    if any(p == CONTRADICTED for p in parts):
        return CONTRADICTED
    return OPEN
