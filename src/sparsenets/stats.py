"""Seed statistics the claims are judged with (README, "Claims and verdicts").

Every quantity is measured once per seed; a method is summarised by its mean over seeds and a 95 % t-interval,
and two methods are compared through the interval of their difference, paired by seed where the runs share
seeds (same seed: same data order and initialisation), else Welch's. An accuracy is also an estimate from a
finite test set: its binomial variance p(1 − p)/n_test is added to the seed variance (`extra_var`; the seeds share
the test set, so this term does not shrink with more seeds), the degrees of freedom by Welch–Satterthwaite (the
binomial term known, infinite df). A zero-width interval therefore never decides an accuracy comparison.
Pure numpy/scipy: no torch.
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
WITHIN_FLOOR = "below the effect-size floor"  # clear of 0, but smaller than the stated minimum effect
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
    sd: float = math.nan  # the seeds' standard deviation (ddof = 1) of the values or per-seed differences
    extra_var: float = 0.0  # variance added to the mean's (the test set's binomial noise)

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


def binomial_var(p: float, n_test: float) -> float:
    """The variance of an accuracy p measured on n_test images: p(1 − p)/n_test (0 when either is unknown)."""
    if n_test is None or not n_test > 0 or p is None or math.isnan(p):
        return 0.0
    return float(p * (1 - p) / n_test)


def _half(sd: float, n: int, extra_var: float) -> float:
    """t·√(sd²/n + extra_var), df by Welch–Satterthwaite with the extra term known (infinite df)."""
    seed_var = sd**2 / n
    total = seed_var + extra_var
    if total == 0:
        return 0.0
    df = total**2 / (seed_var**2 / (n - 1)) if seed_var > 0 else math.inf
    return t_quantile(df) * math.sqrt(total)


def t_interval(values: Values | Iterable[float], kind: str = "t", extra_var: float = 0.0) -> Interval:
    """Mean ± t·√(sd²/n + extra_var) (sd with ddof = 1; extra_var = 0: the plain t-interval with n − 1 df) over
    seeds; NaN values count as not measured."""
    v = _clean(values)
    seeds = _sorted_seeds(v)
    x = np.array([v[s] for s in seeds], dtype=float)
    n = len(x)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0, (), kind)
    mean = float(x.mean())
    if n == 1:
        return Interval(mean, math.nan, math.nan, 1, seeds, kind, extra_var=extra_var)
    sd = float(x.std(ddof=1))
    half = _half(sd, n, extra_var)
    return Interval(mean, mean - half, mean + half, n, seeds, kind, sd, extra_var)


def welch_interval(a: Values, b: Values, extra_var: float = 0.0) -> Interval:
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
        return Interval(mean, math.nan, math.nan, 1, seeds, "welch", extra_var=extra_var)
    va, vb = float(xa.var(ddof=1)) / na, float(xb.var(ddof=1)) / nb
    n = min(na, nb)
    sd = math.sqrt((va + vb) * n)  # the per-seed spread that gives the same standard error at n seeds
    se2 = va + vb + extra_var
    if se2 == 0:
        return Interval(mean, mean, mean, n, seeds, "welch", 0.0, extra_var)
    terms = va**2 / (na - 1) + vb**2 / (nb - 1)
    df = se2**2 / terms if terms > 0 else math.inf
    half = t_quantile(df) * math.sqrt(se2)
    return Interval(mean, mean - half, mean + half, n, seeds, "welch", sd, extra_var)


def difference(a: Values, b: Values, paired: bool | None = None, extra_var: float = 0.0) -> Interval:
    """Interval of a − b from two {seed: value} mappings. Paired by seed over the seeds both have when
    there are two or more of them (or when Welch is impossible); else Welch. paired=True forces pairing
    (no common seed: n = 0), paired=False forces Welch. `extra_var`: added to the variance of the mean."""
    a, b = _clean(a), _clean(b)
    common = _sorted_seeds(set(a) & set(b))
    if paired is None:
        paired = len(common) >= 2 or (bool(common) and min(len(a), len(b)) < 2)
    if paired:
        return t_interval({s: a[s] - b[s] for s in common}, kind="paired", extra_var=extra_var)
    return welch_interval(a, b, extra_var)


def accuracy_difference(a: Values, b: Values, n_test: float, paired: bool | None = None) -> Interval:
    """a − b of two accuracies measured on the same n_test test images: the seed interval widened by one
    accuracy's binomial variance p̄(1 − p̄)/n_test, p̄ the mean of the two (the runs share the test images, so
    their errors are positively correlated and 2p̄(1 − p̄)/n_test would overstate it; ignoring it would let a
    zero-width interval decide)."""
    a, b = _clean(a), _clean(b)
    values = list(a.values()) + list(b.values())
    p = float(np.mean(values)) if values else math.nan
    return difference(a, b, paired, binomial_var(p, n_test))


def seeds_to_decide(diff: Interval, effect: float, power: float = 0.8) -> float | None:
    """About how many seeds would put the interval of `diff` clear by `effect` (the observed distance of its mean
    from what would decide it) at the observed spread: n ≈ sd² / ((effect / (z₀.₉₇₅ + z_power))² − extra_var)
    (normal approximation, 80 % power; the test-set term does not shrink with seeds). None: no spread measured
    (one seed) or no effect; inf: the test set's own noise alone exceeds the effect."""
    if diff.n < 2 or math.isnan(diff.sd) or not effect > 0:
        return None
    z = float(_scipy.norm.ppf(0.5 + LEVEL / 2) + _scipy.norm.ppf(power))
    room = (effect / z) ** 2 - diff.extra_var
    if room <= 0:
        return math.inf
    return float(max(2, math.ceil(diff.sd**2 / room)))


def shifted(diff: Interval, by: float) -> Interval:
    """The interval of diff − by (to test "at least `by`" as "above 0")."""
    return Interval(diff.mean - by, diff.low - by, diff.high - by, diff.n, diff.seeds, diff.kind, diff.sd,
                    diff.extra_var)


def outcome_greater(diff: Interval, point_decides: bool, floor: float = 0.0) -> str:
    """Is the difference above 0, by at least `floor` (the effect-size floor)? "above" if its interval lies above 0
    and its mean is ≥ floor, "below" if its interval lies below 0 and its mean ≤ −floor, "below the effect-size
    floor" if the interval is clear of 0 but the mean is smaller than the floor, else "within noise". One seed:
    when `point_decides` (structural measurements, deterministic given the seed) the mean decides the same way
    (≥ floor above, ≤ −floor below, else below the floor; floor 0: a mean of exactly 0 is within noise), else
    "one seed". Nothing to compare: "no data"."""
    if diff.n == 0 or math.isnan(diff.mean):
        return NO_DATA
    if diff.n == 1 and not point_decides:
        return ONE_SEED
    clear_above = diff.mean > 0 if diff.n == 1 else diff.low > 0
    clear_below = diff.mean < 0 if diff.n == 1 else diff.high < 0
    if clear_above:
        return ABOVE if diff.mean >= floor else WITHIN_FLOOR
    if clear_below:
        return BELOW if diff.mean <= -floor else WITHIN_FLOOR
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
