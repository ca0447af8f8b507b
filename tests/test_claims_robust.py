"""C5 and C5b as worded: the ordering must hold across the curve (crossing curves are inconclusive and say so),
and each is judged under every reading of the open choices (ranking global or per layer, stale or recalibrated
BN), the verdict being the configured reading's. Crafted sensitivity tables of the real schema
(sparsenets.tables.sensitivity_table's columns)."""
from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from sparsenets import claims
from sparsenets.claims import INCONCLUSIVE, NOT_ENOUGH, NOT_REPRODUCED, REPRODUCED, ClaimOptions, reading_name

FRACTIONS = [0.0, 0.25, 0.5, 0.75, 0.9]
SEEDS = [0, 1, 2]
JITTER = {0: (1, -1, 0), 1: (-1, 0, 1), 2: (0, 1, -1), 3: (1, 0, -1)}  # per method, over seeds: differences keep a spread
FLAT, STEEP = [1.0, 0.95, 0.85, 0.6, 0.4], [1.0, 0.6, 0.3, 0.1, 0.0]  # normalised a(f): robust vs fragile
READINGS = [reading_name(r, b) for r in ("global", "layer") for b in ("stale", "recalibrated")]


def sens_table(curves: dict, noise: float = 0.003, test_size: int | None = 10_000, acc0: float = 0.9,
               num_classes: int = 10) -> pd.DataFrame:
    """curves: {(mode, ranking, bn): {method: a(f) per fraction}}, one row per run, reading and fraction as
    tables.sensitivity_table writes them; acc = chance + a·(acc0 − chance) + noise × the method's seed pattern."""
    chance, rows = 1 / num_classes, []
    for (mode, ranking, bn), by_method in curves.items():
        for (j, (method, a)), seed in itertools.product(enumerate(by_method.items()), SEEDS):
            for i, (f, value) in enumerate(zip(FRACTIONS, a)):
                acc = chance + value * (acc0 - chance) + noise * JITTER[j % 4][seed] * (i > 0)
                rows.append({"study": "deconstructing", "dataset": "cifar10", "model": "convnet", "method": method,
                             "density": 0.0625, "seed": seed, "variant": "original", "num_classes": num_classes,
                             "test_size": test_size, "mode": mode, "ranking": ranking, "bn_recalibrated": bn == "recalibrated",
                             "fraction": f, "test_acc": acc, "test_loss": 1.0, "kept": 100})
    return pd.DataFrame(rows)


def everywhere(by_method: dict, mode: str = "magnitude") -> dict:
    """The same curves under all four readings."""
    return {(mode, r, b): by_method for r in ("global", "layer") for b in ("stale", "recalibrated")}


def c5_pos() -> dict:
    return {"random": STEEP, "imp": FLAT, "dnw": FLAT, "rigl": FLAT}


def c5b_pos() -> dict:
    return {"random": STEEP, "rigl": STEEP, "imp": FLAT, "dnw": FLAT}


def judge(cid: str, table: pd.DataFrame, options: ClaimOptions | None = None) -> claims.Finding:
    try:
        return claims.TESTS[cid](claims._prepare(table), options or ClaimOptions())
    except claims.Missing as e:
        return claims.Finding(NOT_ENOUGH, str(e))


# ------------------------------------------------------------------------------------------ positives
@pytest.mark.parametrize("cid, mode, curves", [("C5", "magnitude", c5_pos()), ("C5b", "random", c5b_pos())])
def test_a_clear_ordering_is_reproduced_under_every_reading(cid, mode, curves):
    found = judge(cid, sens_table(everywhere(curves, mode)))
    assert found.verdict == REPRODUCED
    assert found.readings == {r: REPRODUCED for r in READINGS}
    assert "cross" not in found.measured and "ranking=global, bn=stale" in found.measured


# ------------------------------------------------------------------------------------------ crossing
def test_crossing_curves_are_inconclusive_whatever_the_area_says():
    # IMP keeps more accuracy up to f = 0.5, then drops below random: its area is still the larger
    crossing = {"random": [1.0, 0.7, 0.5, 0.35, 0.3], "imp": [1.0, 1.0, 0.95, 0.3, 0.0], "dnw": FLAT, "rigl": FLAT}
    areas = claims._areas(claims._prepare(sens_table(everywhere(crossing))).query("ranking == 'global' and "
                                                                                  "bn_recalibrated == False"))[0]
    assert np.mean(list(areas["imp"].values())) > np.mean(list(areas["random"].values()))
    found = judge("C5", sens_table(everywhere(crossing)))
    assert found.verdict == INCONCLUSIVE
    assert "the curves cross: imp is below random at f = 0.75, 0.9" in found.measured
    assert any(n["detail"].startswith("a(f) at f = 0.9") and n["method"] == "imp − random" and n["ci_high"] < 0
               for n in found.numbers)


def test_a_reversal_inside_the_noise_is_no_crossing():
    # IMP dips 0.01 below random at f = 0.25 with a large spread there: not outside the noise, the order holds
    near = {"random": [1.0, 0.97, 0.4, 0.2, 0.1], "imp": [1.0, 0.96, 0.8, 0.6, 0.5], "dnw": FLAT, "rigl": FLAT}
    found = judge("C5", sens_table(everywhere(near), noise=0.02))
    assert found.verdict == REPRODUCED and "cross" not in found.measured


def test_crossing_in_c5b_is_named_and_keeps_the_claim_open():
    curves = {**c5b_pos(), "dnw": [1.0, 1.0, 1.0, 0.0, 0.0]}  # DNW above until f = 0.5, below rigl at 0.75
    found = judge("C5b", sens_table(everywhere(curves, "random")))
    assert found.verdict == INCONCLUSIVE
    assert "dnw is below rigl at f = 0.75" in found.measured and "dnw is below random at f = 0.75" in found.measured
    assert "imp − rigl" in found.measured and found.readings == {r: INCONCLUSIVE for r in READINGS}


def test_a_clear_reversal_all_along_is_not_reproduced():
    found = judge("C5", sens_table(everywhere({"random": FLAT, "imp": STEEP, "dnw": STEEP, "rigl": STEEP})))
    assert found.verdict == NOT_REPRODUCED and "cross" not in found.measured


# ------------------------------------------------------------------------------------------ readings
def test_each_reading_is_judged_and_the_verdict_is_the_configured_ones():
    reversed_ = {"random": FLAT, "imp": STEEP, "dnw": STEEP, "rigl": STEEP}
    curves = {**everywhere(c5_pos()), ("magnitude", "layer", "stale"): reversed_,
              ("magnitude", "layer", "recalibrated"): reversed_}
    table = sens_table(curves)
    found = judge("C5", table)
    assert found.verdict == REPRODUCED
    assert found.readings == {reading_name("global", "stale"): REPRODUCED,
                              reading_name("global", "recalibrated"): REPRODUCED,
                              reading_name("layer", "stale"): NOT_REPRODUCED,
                              reading_name("layer", "recalibrated"): NOT_REPRODUCED}
    assert "Reading ranking=layer, bn=stale: ❌ not reproduced" in found.measured
    layer = judge("C5", table, ClaimOptions(sensitivity_ranking="layer"))
    assert layer.verdict == NOT_REPRODUCED and layer.readings == found.readings
    recal = judge("C5", table, ClaimOptions(sensitivity_bn="recalibrated"))
    assert recal.verdict == REPRODUCED
    # every other reading's differences are among the numbers, named by their reading
    details = {n["detail"] for n in found.numbers if n["quantity"] == "difference"}
    assert "area (magnitude, layer ranking, recalibrated BN)" in details


def test_recalibrated_bn_can_decide_otherwise():
    curves = {**everywhere(c5b_pos(), "random"),
              ("random", "global", "recalibrated"): {"random": FLAT, "rigl": FLAT, "imp": FLAT, "dnw": FLAT}}
    found = judge("C5b", sens_table(curves))
    assert found.verdict == REPRODUCED
    assert found.readings[reading_name("global", "recalibrated")] == INCONCLUSIVE
    assert sum(v == REPRODUCED for v in found.readings.values()) == 3


def test_a_table_from_before_the_rankings_has_the_global_readings_only():
    table = sens_table(everywhere(c5_pos())).query("ranking == 'global'").drop(columns="ranking")
    found = judge("C5", table)
    assert found.verdict == REPRODUCED and set(found.readings) == {reading_name("global", b)
                                                                   for b in ("stale", "recalibrated")}
    missing = judge("C5", table, ClaimOptions(sensitivity_ranking="layer"))
    assert missing.verdict == NOT_ENOUGH and "configured reading (ranking=layer, bn=stale)" in missing.measured


def test_unknown_reading_options_are_errors():
    with pytest.raises(ValueError, match="sensitivity_ranking must be one of global, layer, got 'row'"):
        ClaimOptions(sensitivity_ranking="row")
    with pytest.raises(ValueError, match="sensitivity_bn"):
        ClaimOptions.from_dict({"sensitivity_bn": "fresh"})
    assert ClaimOptions.from_dict({"sensitivity_ranking": "layer"}).sensitivity_ranking == "layer"


# ------------------------------------------------------------------------------------------ test-set noise
def test_identical_seeds_do_not_decide_a_tiny_difference_the_test_set_cannot_resolve():
    # no seed spread at all (noise 0): the seed interval has zero width; the test set's noise keeps it open
    tiny = {"random": [1.0, 0.9, 0.8, 0.7, 0.6], "imp": [1.0, 0.905, 0.805, 0.705, 0.605], "dnw": FLAT, "rigl": FLAT}
    found = judge("C5", sens_table(everywhere(tiny), noise=0.0, test_size=2_000))
    imp = next(n for n in found.numbers if n["method"] == "imp − random" and n["quantity"] == "difference")
    assert imp["ci_low"] < 0 < imp["ci_high"] and found.verdict == INCONCLUSIVE
    big = judge("C5", sens_table(everywhere(c5_pos()), noise=0.0, test_size=2_000))
    assert big.verdict == REPRODUCED  # a large effect still clears the test set's noise


def test_curves_without_a_test_set_size_cannot_be_judged():
    found = judge("C5", sens_table(everywhere(c5_pos()), test_size=None))
    assert found.verdict == NOT_ENOUGH and "test_size" in found.measured
