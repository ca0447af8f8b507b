"""Each claim's verdict on synthetic tables whose answer is known: reproduced, not reproduced, not enough runs."""
from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from sparsenets import claims
from sparsenets.claims import NOT_ENOUGH, NOT_REPRODUCED, REPRODUCED

NET = {"dataset": "cifar10", "model": "resnet20"}
DENSITIES = [0.2, 0.05]
SEEDS = [0, 1, 2]
JITTER = {0: -0.001, 1: 0.0, 2: 0.001}  # a small spread over seeds


def _runs(values: dict[str, float], column: str, **spec) -> pd.DataFrame:
    """One row per method, density and seed, with `column` = the method's value (+ a density term)."""
    return pd.DataFrame([{**NET, "variant": "original", **spec, "method": m, "density": d, "seed": s,
                          column: v + d / 10 + JITTER[s]} for (m, v), d, s in itertools.product(values.items(),
                                                                                               DENSITIES, SEEDS)])


def phew_runs(acc=None, trace=None) -> pd.DataFrame:
    acc = acc or {"phew": 0.80, "synflow": 0.75, "synflow-l2": 0.76, "random": 0.70}
    trace = trace or {"phew": 1e8, "synflow": 1e9, "synflow-l2": 1e9, "random": 1e2}
    runs = _runs(acc, "final_test_acc")
    return runs.assign(init_path_kernel_trace=runs["method"].map(trace))


def phew_layers(narrowest=None) -> pd.DataFrame:
    narrowest = narrowest or {"phew": 0.9, "synflow-l2": 0.2}
    rows = [{**r, "layer_index": i, "width_ratio": 1.0 if i else r["w"]}
            for r in _runs(narrowest, "w").to_dict("records") for i in range(3)]
    return pd.DataFrame(rows).drop(columns="w")


def dec_runs(reinit=None, full_dnw=0.80, frozen=None) -> pd.DataFrame:
    original = _runs({"random": 0.80, "imp": 0.85, "dnw": full_dnw, "rigl": 0.84}, "final_test_acc")
    again = _runs(reinit or {"random": 0.75, "imp": 0.753, "dnw": 0.80, "rigl": 0.79}, "final_test_acc",
                  variant="reinit")
    frozen = frozen or {0: 0.70, 1: 0.76, 3: 0.795, 10: 0.80}
    freezing = pd.concat([_runs({f"dnw-freeze{k}": acc}, "final_test_acc", freeze_epoch=k)  # as the DAG names them
                          for k, acc in frozen.items()])
    return pd.concat([original, again, freezing], ignore_index=True)


def dec_sens(acc_at_largest=None) -> pd.DataFrame:
    acc_at_largest = acc_at_largest or {"random": 0.2, "imp": 0.6, "dnw": 0.5, "rigl": 0.4}
    rows = []
    for (m, low), mode, bn, f in itertools.product(acc_at_largest.items(), ["magnitude", "random"], [False, True],
                                                   [0.0, 0.5, 0.9]):
        base = {**NET, "variant": "original", "method": m, "mode": mode, "bn_recalibrated": bn, "fraction": f}
        rows += [{**base, "density": d, "seed": s, "test_acc": 0.9 if f == 0 else low + 0.1 * (f == 0.5)}
                 for d, s in itertools.product(DENSITIES, SEEDS)]
    return pd.DataFrame(rows)


def dec_overlap(final=None, prev=None, epochs=6) -> pd.DataFrame:
    final = final or (lambda e: 1 - 0.3 / e)
    prev = prev or (lambda e: 1 - 0.2 / e)
    return pd.DataFrame([{**NET, "variant": "original", "method": "dnw", "density": d, "seed": s, "epoch": e,
                          "overlap_prev": np.nan if e == 1 else prev(e), "overlap_final": final(e)}
                         for d, s, e in itertools.product(DENSITIES, SEEDS, range(1, epochs + 1))])


def verdicts(**tables) -> dict[str, str]:
    defaults = dict(phew_runs=phew_runs(), phew_layers=phew_layers(), dec_runs=dec_runs(), dec_sens=dec_sens(),
                    dec_overlap=dec_overlap())
    rows = claims.build(**{**defaults, **tables})
    assert len(rows) == len({r["id"] for r in rows}), "one network: one row per claim"
    return {r["id"]: r["verdict"] for r in rows}


def test_every_claim_is_reproduced_on_tables_built_to_hold_them():
    assert verdicts() == {f"C{i}": REPRODUCED for i in range(1, 8)}


@pytest.mark.parametrize("claim, tables", [
    ("C1", dict(phew_layers=phew_layers({"phew": 0.3, "synflow-l2": 0.3})),),  # equally narrow is not narrower
    ("C2", dict(phew_runs=phew_runs(trace={"phew": 1e17, "synflow": 1e9, "synflow-l2": 1e9, "random": 1e2}))),
    ("C2", dict(phew_runs=phew_runs(trace={"phew": 1e1, "synflow": 1e9, "synflow-l2": 1e9, "random": 1e2}))),
    ("C3", dict(phew_runs=phew_runs(acc={"phew": 0.75, "synflow": 0.74, "synflow-l2": 0.76, "random": 0.7}))),
    ("C4", dict(dec_runs=dec_runs(reinit={"random": 0.75, "imp": 0.78, "dnw": 0.80, "rigl": 0.79}))),
    ("C4", dict(dec_runs=dec_runs(reinit={"random": 0.75, "imp": 0.75, "dnw": 0.80, "rigl": 0.74}))),
    ("C5", dict(dec_sens=dec_sens({"random": 0.5, "imp": 0.6, "dnw": 0.4, "rigl": 0.6}))),
    ("C6", dict(dec_overlap=dec_overlap(final=lambda e: 0.4 if e == 1 else 1 - 0.3 / e))),
    ("C6", dict(dec_overlap=dec_overlap(prev=lambda e: 0.99 if e == 2 else 0.9))),  # change grows after epoch 2
    ("C7", dict(dec_runs=dec_runs(full_dnw=0.82))),
])
def test_a_claim_the_tables_contradict_is_not_reproduced(claim, tables):
    got = verdicts(**tables)
    assert got[claim] == NOT_REPRODUCED
    assert all(v == REPRODUCED for c, v in got.items() if c != claim)


def test_edges_of_the_definitions():
    # a random net with no input-output path: its log trace is -inf, PHEW is still nearer SynFlow-L2
    no_path = phew_runs(trace={"phew": 1e8, "synflow": 1e9, "synflow-l2": 1e9, "random": 0.0})
    # IMP within 1 pp of random after reinit counts as "about as well"
    close = dec_runs(reinit={"random": 0.75, "imp": 0.759, "dnw": 0.80, "rigl": 0.79})
    # frozen after 3 epochs 0.9 pp below full DNW is "nearly matches"; k = 10 above it does not count
    nearly = dec_runs(full_dnw=0.804, frozen={3: 0.795, 10: 0.9})
    # with the initial structure recorded, epoch 1's change (here tiny) is the one compared
    recorded = dec_overlap()
    recorded["overlap_prev"] = recorded["overlap_prev"].fillna(0.99)
    assert verdicts(phew_runs=no_path)["C2"] == REPRODUCED
    assert verdicts(dec_runs=close)["C4"] == REPRODUCED
    assert verdicts(dec_overlap=recorded)["C6"] == NOT_REPRODUCED
    assert verdicts(dec_runs=nearly)["C7"] == REPRODUCED
    # a layer-matched random baseline is a random structure: it may drop faster than uniform random
    assert verdicts(dec_sens=dec_sens({"random": 0.2, "random-like-imp": 0.1, "imp": 0.6, "dnw": 0.5,
                                       "rigl": 0.4}))["C5"] == REPRODUCED
    assert verdicts(dec_runs=dec_runs(full_dnw=0.81, frozen={3: 0.795, 10: 0.9}))["C7"] == NOT_REPRODUCED


def test_missing_methods_or_studies_give_not_enough_runs():
    runs, dec = phew_runs(), dec_runs()
    got = verdicts(phew_runs=runs[runs["method"] != "synflow"], dec_sens=None, dec_overlap=pd.DataFrame(),
                   dec_runs=dec[dec["freeze_epoch"].isna()])
    assert got == {"C1": REPRODUCED, "C2": REPRODUCED, "C3": NOT_ENOUGH, "C4": REPRODUCED, "C5": NOT_ENOUGH,
                   "C6": NOT_ENOUGH, "C7": NOT_ENOUGH}
    rows = claims.build(None, None, None, None, None)
    assert [r["id"] for r in rows] == list(claims.CLAIMS) and {r["verdict"] for r in rows} == {NOT_ENOUGH}
    reinit_without_rigl = dec_runs()
    reinit_without_rigl = reinit_without_rigl[(reinit_without_rigl["variant"] == "original")
                                              | (reinit_without_rigl["method"] != "rigl")]
    row = next(r for r in claims.build(None, None, reinit_without_rigl, None, None) if r["id"] == "C4")
    assert row["verdict"] == NOT_ENOUGH and "rigl" in row["measured"]


def test_each_network_is_judged_on_its_own():
    other = phew_runs(acc={"phew": 0.7, "synflow": 0.75, "synflow-l2": 0.76, "random": 0.6}).assign(model="vgg19")
    rows = [r for r in claims.build(pd.concat([phew_runs(), other]), None, None, None, None) if r["id"] == "C3"]
    assert [(r["network"], r["verdict"]) for r in rows] == [("resnet20/cifar10", REPRODUCED),
                                                            ("vgg19/cifar10", NOT_REPRODUCED)]
    assert rows[1]["phew"] == pytest.approx(0.7 + 0.05 / 10)  # the numbers are at the lowest density


def test_write_gives_a_readable_table_and_a_csv(tmp_path):
    rows = claims.build(phew_runs(), phew_layers(), None, dec_sens(), dec_overlap())
    claims.write(rows, tmp_path / "claims.md", tmp_path / "claims.csv", preset="quick",
                 tables=["results/phew/tables/runs.csv"])
    md = (tmp_path / "claims.md").read_text()
    assert "preset `quick`" in md and "results/phew/tables/runs.csv" in md
    assert "| **C5** Under further pruning by magnitude" in md
    assert "✅ reproduced" in md and "⚪ not enough runs" in md
    assert all(f"- **C{i}** " in md for i in range(1, 8))  # how each claim is tested
    csv = pd.read_csv(tmp_path / "claims.csv")
    assert list(csv["id"]) == [f"C{i}" for i in range(1, 8)]
    assert csv.loc[csv["id"] == "C1", "synflow-l2"].item() == pytest.approx(0.2 + 0.005)
    assert not list(tmp_path.glob(".*.tmp"))
