"""mag, PHEW's reference of magnitude pruning *after* training: the cubic schedule, the gradual pruning phase
(sparsenets.topology.gradual) through the real training loop, the dense -> pruning -> retraining chain through
the job entry points, and that figures and claims treat it as a reference, not a method at initialisation."""
from __future__ import annotations

import dataclasses
import json

import pandas as pd
import pytest
import torch

from sparsenets import claims
from sparsenets.experiments import make_mask, run_training
from sparsenets.study import Run
from sparsenets.masks import Mask, keep_count, prunable
from sparsenets.models import build_model
from sparsenets.optim import SGD
from sparsenets.topology import Schedule, make_topology
from sparsenets.topology.gradual import pruned_fraction
from sparsenets.train import Recipe
from test_claims import phew_layers, phew_runs

# 1,438 training digits in batches of 256: 6 steps an epoch
RECIPE = Recipe(epochs=2, batch_size=256, lr=0.05, milestones=(1,), augment=False)
PRUNE = dataclasses.replace(RECIPE, epochs=3, milestones=())  # constant lr, as PHEW's pruning phase
DENSITY = 0.1
quiet = dict(log=lambda m: None, device="cpu")


def test_cubic_schedule_prunes_fast_first_and_reaches_the_target_at_the_last_epoch():
    final = 1 - DENSITY
    p = [pruned_fraction(e, 10, final) for e in range(11)]
    assert p[0] == 0 and p[10] == pytest.approx(final) and p[1] == pytest.approx(final * (1 - 0.9 ** 3))
    steps = [b - a for a, b in zip(p, p[1:])]
    assert all(s > 0 for s in steps) and steps == sorted(steps, reverse=True)  # each epoch prunes less


def _topology(model: torch.nn.Module, epochs: int, steps: int = 4):
    optimizer = SGD(model.parameters(), lr=0.1, momentum=0.9)
    schedule = Schedule(steps, epochs, torch.Generator().manual_seed(0))
    return make_topology("gradual-magnitude", model, Mask.ones(model), optimizer, schedule, density=DENSITY)


def test_each_epoch_starts_by_keeping_the_largest_weights_at_the_schedules_density():
    model = build_model("resnet20", 10, (3, 8, 8), seed=0)
    weights = {k: w.detach().clone() for k, w in prunable(model).items()}
    topo = _topology(model, epochs=3)
    total = topo.mask.total
    topo.before_forward(1)  # inside epoch 1: nothing changes
    assert topo.mask.kept == total
    topo.before_forward(0)  # epoch 1 starts
    kept = keep_count(1 - pruned_fraction(1, 3, 1 - DENSITY), total)
    assert topo.mask.kept == kept
    assert all(torch.equal(topo.mask[k], m) for k, m in Mask.top({k: w.abs() for k, w in weights.items()}, kept).items())
    for k, w in prunable(model).items():  # pruned weights are exactly zero, kept ones untouched
        assert torch.equal(w.detach(), weights[k] * topo.mask[k])
    topo.before_forward(8)  # epoch 3 starts: the final density, exactly
    assert topo.mask.kept == keep_count(DENSITY, total)


def test_a_phase_of_mag_is_no_method_a_study_can_list():
    from sparsenets import topology

    assert "gradual-magnitude" in topology.TOPOLOGIES and "gradual-magnitude" not in topology.methods()
    with pytest.raises(ValueError, match="needs option density"):
        make_topology("gradual-magnitude", build_model("mlp", 10, (1, 8, 8)), Mask.ones(build_model("mlp", 10, (1, 8, 8))),
                      None, Schedule(1, 1, torch.Generator()))


@pytest.fixture(scope="module")
def chain(digits_npz, tmp_path_factory):
    """Dense run -> pruning run (3 epochs) -> retraining run, as the workflow chains them (sparsenets.study)."""
    out = tmp_path_factory.mktemp("mag")
    make_mask("mlp", digits_npz, "random", 1.0, 0, out / "dense.pt", device="cpu")
    spec = Run("digits", "mlp", "random", 1.0, 0, study="phew")
    run_training(spec, RECIPE, data_file=digits_npz, mask_file=out / "dense.pt", out_dir=out / "dense", **quiet)
    mag = dataclasses.replace(spec, method="mag", density=DENSITY)
    run_training(dataclasses.replace(mag, variant="prune"), PRUNE, data_file=digits_npz,
                 mask_file=out / "dense" / "mask.pt", init_weights=out / "dense" / "model.pt", out_dir=out / "prune",
                 topology="gradual-magnitude", topology_options={"density": DENSITY}, **quiet)
    run_training(mag, RECIPE, data_file=digits_npz, mask_file=out / "prune" / "mask.pt",
                 init_weights=out / "prune" / "model.pt", out_dir=out / "run", **quiet)
    return out


def test_pruning_phase_follows_the_schedule_epoch_by_epoch_and_ends_exactly_at_the_density(chain):
    metrics = json.loads((chain / "prune" / "metrics.json").read_text())
    mask = Mask.load(chain / "prune" / "mask.pt")
    expected = [keep_count(1 - pruned_fraction(e, 3, 1 - DENSITY), mask.total) / mask.total for e in (1, 2, 3)]
    assert [row["density"] for row in metrics["history"]] == expected
    assert mask.kept == keep_count(DENSITY, mask.total)
    state = torch.load(chain / "prune" / "model.pt", weights_only=True)
    assert all(torch.all(state[k][~m] == 0) for k, m in mask.items())
    assert metrics["spec"]["variant"] == "prune" and metrics["init_weights"].endswith("dense/model.pt")


def test_retraining_starts_from_the_pruned_weights_and_keeps_their_structure(chain):
    metrics = json.loads((chain / "run" / "metrics.json").read_text())
    assert metrics["spec"]["method"] == "mag" and metrics["epochs"] == RECIPE.epochs
    assert metrics["init_weights"].endswith("prune/model.pt") and metrics["density"] == pytest.approx(DENSITY, abs=1e-4)
    before, after = Mask.load(chain / "prune" / "mask.pt"), Mask.load(chain / "run" / "mask.pt")
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert metrics["final_test_acc"] > 0.5  # a trained dense net pruned to 10 %, then retrained, still classifies


# ------------------------------------------------------------------------------ a reference, not a method at init
def test_mag_runs_change_no_phew_claim():
    """C1–C3 compare methods at initialisation: an unbeatable mag (accuracy 1, any trace, full widths) changes
    no verdict and no number."""
    runs, layers = phew_runs(), phew_layers()
    mag = runs[runs["method"] == "random"].assign(method="mag", final_test_acc=1.0, init_path_kernel_trace=1e30)
    mag_layers = layers[layers["method"] == "phew"].assign(method="mag", width_ratio=1.0)

    def judge(r: pd.DataFrame, la: pd.DataFrame) -> list:
        found = claims.build([claims.StudyTables("phew", "phew", {"runs": r, "layers": la}, claims.ClaimOptions())])
        return [(c["id"], c["verdict"], c["measured"], json.dumps(c["numbers"], default=str)) for c in found]

    assert judge(pd.concat([runs, mag]), pd.concat([layers, mag_layers])) == judge(runs, layers)


def test_mag_is_drawn_as_a_dashed_reference_in_accuracy_vs_density():
    from sparsenets import figures
    from sparsenets.labels import label

    runs = phew_runs(acc={"phew": 0.8, "random": 0.7, "mag": 0.9})
    fig = figures.accuracy_vs_density(runs.assign(preset="tiny", study="phew"))
    lines = {line.get_label(): line for ax in fig.axes for line in ax.get_lines()}
    assert lines[label("mag")].get_linestyle() != "-" and lines[label("phew")].get_linestyle() == "-"
