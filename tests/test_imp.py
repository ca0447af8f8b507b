"""IMP (levels, rewinding) and the layer-matched random baseline."""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from sparsenets import data, experiments
from sparsenets.experiments import derive_seeds, imp_mask, make_mask, run_training
from sparsenets.study import Run
from sparsenets.masks import Mask, atomic_save, prunable
from sparsenets.models import build_model
from sparsenets.pruning import PruneInputs, build_mask
from sparsenets.train import Recipe, seeded_generator

DENSE = Run("digits", "convnet", "random", 1.0, 0, study="deconstructing")
# 1,438 training digits in full batches of 256: 5 steps an epoch
RECIPE = Recipe(epochs=3, batch_size=256, lr=0.05, milestones=(2,), augment=False)
quiet = dict(log=lambda m: None, device="cpu")


@pytest.fixture(scope="module")
def dense_mask(digits_npz, tmp_path_factory):
    path = tmp_path_factory.mktemp("dense") / "mask.pt"
    make_mask("convnet", digits_npz, "random", 1.0, 0, path, device="cpu")
    return path


def _states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_imp_level_l_has_density_0_8_to_the_l(tmp_path):
    model = build_model("resnet20", 10, (3, 32, 32), seed=0)
    mask = Mask({k: torch.ones_like(w, dtype=torch.bool) for k, w in prunable(model).items()})
    run = tmp_path / "level0"
    run.mkdir()
    mask.save(run / "mask.pt")
    atomic_save(model.state_dict(), run / "model.pt")
    for level in range(1, 8):
        nxt = imp_mask(run, 0.2, tmp_path / f"mask{level}.pt")
        assert nxt.density == pytest.approx(0.8 ** level, abs=level / nxt.total)
        assert nxt.meta["level"] == level
        previous = Mask.load(run / "mask.pt")
        assert all(torch.all(previous[k] | ~nxt[k]) for k in nxt)  # a level only removes weights
        run = tmp_path / f"level{level}"
        run.mkdir()
        nxt.save(run / "mask.pt")
        state = {k: v * nxt[k] if k in nxt else v for k, v in model.state_dict().items()}
        atomic_save(state, run / "model.pt")


def test_rewind_step_keeps_the_weights_after_k_steps(digits_npz, dense_mask, tmp_path):
    run_training(DENSE, RECIPE, data_file=digits_npz, mask_file=dense_mask, out_dir=tmp_path / "a", rewind_step=5,
                 **quiet)
    one_epoch = dataclasses.replace(RECIPE, epochs=1)
    run_training(DENSE, one_epoch, data_file=digits_npz, mask_file=dense_mask, out_dir=tmp_path / "b", **quiet)
    rewind = torch.load(tmp_path / "a" / "rewind.pt", weights_only=True)
    assert _states_equal(rewind, torch.load(tmp_path / "b" / "model.pt", weights_only=True))
    assert not _states_equal(rewind, torch.load(tmp_path / "a" / "model.pt", weights_only=True))
    assert json.loads((tmp_path / "a" / "metrics.json").read_text())["rewind_step"] == 5


def test_rewind_step_zero_is_the_init(digits_npz, dense_mask, tmp_path):
    run_training(DENSE, RECIPE, data_file=digits_npz, mask_file=dense_mask, out_dir=tmp_path, rewind_step=0, **quiet)
    ds = data.load(digits_npz)
    init = build_model("convnet", ds.num_classes, ds.input_shape, seed=derive_seeds(0)["weight_seed"]).state_dict()
    assert _states_equal(torch.load(tmp_path / "rewind.pt", weights_only=True), init)


def test_rewind_survives_a_killed_job(digits_npz, dense_mask, tmp_path, monkeypatch):
    run_training(DENSE, RECIPE, data_file=digits_npz, mask_file=dense_mask, out_dir=tmp_path / "whole",
                 rewind_step=3, **quiet)

    class Killed(Exception):
        pass

    real = experiments.train

    def dies_in_epoch_2(*args, on_epoch, **kw):
        def hook(row, topo):
            on_epoch(row, topo)
            if row["epoch"] == 2:  # before epoch 2's checkpoint: the job restarts after epoch 1
                raise Killed
        return real(*args, on_epoch=hook, **kw)

    monkeypatch.setattr(experiments, "train", dies_in_epoch_2)
    with pytest.raises(Killed):
        run_training(DENSE, RECIPE, data_file=digits_npz, mask_file=dense_mask, out_dir=tmp_path / "killed",
                     rewind_step=3, **quiet)
    monkeypatch.setattr(experiments, "train", real)
    result = run_training(DENSE, RECIPE, data_file=digits_npz, mask_file=dense_mask, out_dir=tmp_path / "killed",
                          rewind_step=3, **quiet)
    assert result.resumed_from == 1
    assert _states_equal(torch.load(tmp_path / "whole" / "rewind.pt", weights_only=True),
                         torch.load(tmp_path / "killed" / "rewind.pt", weights_only=True))


def test_rewind_step_beyond_the_run_is_refused(digits_npz, dense_mask, tmp_path):
    with pytest.raises(ValueError, match="rewind step 16 is outside this run's 15 optimizer steps"):
        run_training(DENSE, RECIPE, data_file=digits_npz, mask_file=dense_mask, out_dir=tmp_path, rewind_step=16,
                     **quiet)
    assert not (tmp_path / "metrics.json").exists()


def test_imp_run_starts_from_the_rewound_weights(digits_npz, dense_mask, tmp_path):
    run_training(DENSE, RECIPE, data_file=digits_npz, mask_file=dense_mask, out_dir=tmp_path / "dense",
                 rewind_step=4, **quiet)
    level1 = imp_mask(tmp_path / "dense", 0.5, tmp_path / "imp.pt")
    frozen = Recipe(epochs=1, batch_size=256, lr=0.0, momentum=0.0, nesterov=False, weight_decay=0.0,
                    augment=False)
    spec = Run("digits", "convnet", "imp", 0.5, 0, study="deconstructing")
    run_training(spec, frozen, data_file=digits_npz, mask_file=tmp_path / "imp.pt", out_dir=tmp_path / "imp",
                 init_weights=tmp_path / "dense" / "rewind.pt", **quiet)
    rewind = torch.load(tmp_path / "dense" / "rewind.pt", weights_only=True)
    start = torch.load(tmp_path / "imp" / "model.pt", weights_only=True)  # lr 0: the weights it started from
    for k in level1:
        assert torch.equal(start[k], rewind[k] * level1[k])
    metrics = json.loads((tmp_path / "imp" / "metrics.json").read_text())
    assert metrics["init_weights"] == str(tmp_path / "dense" / "rewind.pt")


def test_initial_weights_of_another_model_are_a_clear_error(digits_npz, dense_mask, tmp_path):
    atomic_save(build_model("mlp", 10, (1, 8, 8), seed=0).state_dict(), tmp_path / "mlp.pt")
    with pytest.raises(ValueError, match="initial weights .*mlp.pt do not fit convnet"):
        run_training(DENSE, RECIPE, data_file=digits_npz, mask_file=dense_mask, out_dir=tmp_path / "run",
                     init_weights=tmp_path / "mlp.pt", **quiet)


def _mask(model, method, density, options=None, seed=1):
    inputs = PruneInputs(seeded_generator(seed), 10, (3, 32, 32), options=options or {})
    return build_mask(method, model, density, inputs)


def test_layer_matched_random_copies_layer_counts_not_wiring(tmp_path):
    model = build_model("resnet20", 10, (3, 32, 32), seed=0)
    source = _mask(model, "random-erk", 0.1)  # far from uniform per layer
    source.save(tmp_path / "source.pt")
    matched = _mask(model, "random-like", 0.1, {"like": str(tmp_path / "source.pt")}, seed=2)
    for k in source:
        assert int(matched[k].sum()) == int(source[k].sum())
    assert matched.kept == source.kept
    same = sum(int((matched[k] & source[k]).sum()) for k in source)
    assert same < 0.5 * source.kept  # rewired: about a layer density's share coincides by chance
    assert matched.meta["like"] == str(tmp_path / "source.pt")


def test_layer_matched_random_needs_a_fitting_source(tmp_path):
    model = build_model("resnet20", 10, (3, 32, 32), seed=0)
    with pytest.raises(ValueError, match="needs option 'like'"):
        _mask(model, "random-like", 0.1)
    _mask(model, "random", 0.1).save(tmp_path / "d01.pt")
    with pytest.raises(ValueError, match=r"has density 0.1\d*, not the 0.05 asked for"):
        _mask(model, "random-like", 0.05, {"like": str(tmp_path / "d01.pt")})
    _mask(build_model("mlp", 10, (3, 32, 32), seed=0), "random", 0.1).save(tmp_path / "mlp.pt")
    with pytest.raises(ValueError, match="does not fit"):
        _mask(model, "random-like", 0.1, {"like": str(tmp_path / "mlp.pt")})
