import json

import pytest
import torch

from sparsenets import data
from sparsenets.experiments import derive_seeds, run_training
from sparsenets.study import Run
from sparsenets.masks import Mask, prunable
from sparsenets.models import build_model
from sparsenets.pruning import PruneInputs, build_mask
from sparsenets.train import NumericalError, Recipe, seeded_generator, train

RECIPE = Recipe(epochs=3, batch_size=64, lr=0.05, milestones=(2,), augment=False)


def _setup(digits_npz, model_name="convnet", density=0.1, seed=0):
    ds = data.load(digits_npz)
    model = build_model(model_name, ds.num_classes, ds.input_shape, seed=seed)
    inputs = PruneInputs(seeded_generator(seed), ds.num_classes, ds.input_shape)
    mask = build_mask("random", model, density, inputs)
    kw = dict(batch_size=RECIPE.batch_size, device="cpu", mean=ds.mean, std=ds.std)
    loaders = (data.DeviceLoader(ds.x_train, ds.y_train, train=True, seed=seed, augment=False, **kw),
               data.DeviceLoader(ds.x_test, ds.y_test, train=False, seed=0, **kw))
    return model, mask, loaders


def test_pruned_weights_and_momentum_stay_exactly_zero(digits_npz):
    model, mask, (tr, te) = _setup(digits_npz)
    seen = []

    def check(row, topo):
        for k, w in prunable(model).items():
            assert torch.all(w[~mask[k]] == 0)
            buf = topo.optimizer.state[w]["momentum_buffer"]
            assert torch.all(buf[~mask[k]] == 0)
        seen.append(row["epoch"])

    result = train(model, mask, RECIPE, tr, te, generator=seeded_generator(0), on_epoch=check, log=lambda m: None)
    assert seen == [1, 2, 3]
    assert result.mask.density == pytest.approx(0.1, abs=1e-4)
    assert result.history[-1]["lr"] == pytest.approx(0.005)
    assert result.history[-1]["test_acc"] > 0.3  # it learns


def test_resume_is_bit_identical(digits_npz, tmp_path):
    model, mask, (tr, te) = _setup(digits_npz)
    full = train(model, mask, RECIPE, tr, te, generator=seeded_generator(0), log=lambda m: None)

    class Stop(Exception):
        pass

    def stop_after_two(row, topo):  # dies in epoch 3, before its checkpoint
        if row["epoch"] == 3:
            raise Stop

    ckpt = tmp_path / "ckpt.pt"
    model, mask, (tr, te) = _setup(digits_npz)
    with pytest.raises(Stop):
        train(model, mask, RECIPE, tr, te, generator=seeded_generator(0), checkpoint=ckpt, checkpoint_key="k",
              on_epoch=stop_after_two, log=lambda m: None)
    model, mask, (tr, te) = _setup(digits_npz)
    resumed = train(model, mask, RECIPE, tr, te, generator=seeded_generator(0), checkpoint=ckpt,
                    checkpoint_key="k", log=lambda m: None)
    assert resumed.resumed_from == 2
    strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]  # noqa: E731
    assert strip(resumed.history) == strip(full.history)


def test_checkpoint_of_another_run_is_not_resumed(digits_npz, tmp_path):
    ckpt = tmp_path / "ckpt.pt"
    model, mask, (tr, te) = _setup(digits_npz)
    train(model, mask, Recipe(epochs=1, batch_size=64, augment=False), tr, te, generator=seeded_generator(0),
          checkpoint=ckpt, checkpoint_key="a", log=lambda m: None)
    model, mask, (tr, te) = _setup(digits_npz)
    result = train(model, mask, Recipe(epochs=1, batch_size=64, augment=False), tr, te,
                   generator=seeded_generator(0), checkpoint=ckpt, checkpoint_key="b", log=lambda m: None)
    assert result.resumed_from == 0


def test_nan_loss_stops_with_clear_error_and_keeps_checkpoint(digits_npz, tmp_path):
    model, mask, (tr, te) = _setup(digits_npz)
    ckpt = tmp_path / "ckpt.pt"
    recipe = Recipe(epochs=3, batch_size=64, lr=1e6, momentum=0.9, augment=False)
    with pytest.raises(NumericalError, match="training loss is"):
        train(model, mask, recipe, tr, te, generator=seeded_generator(0), checkpoint=ckpt, checkpoint_key="k",
              log=lambda m: None)
    if ckpt.exists():  # the last good epoch, never a NaN state
        state = torch.load(ckpt, weights_only=False)
        assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_run_training_writes_declared_files(digits_npz, tmp_path):
    spec = Run("digits", "mlp", "random", 0.2, 0, study="phew")
    ds = data.load(digits_npz)
    seeds = derive_seeds(0)
    model = build_model("mlp", ds.num_classes, ds.input_shape, seed=seeds["weight_seed"])
    mask = build_mask("random", model, 0.2, PruneInputs(seeded_generator(seeds["mask_seed"]), 10, ds.input_shape))
    mask.meta["model"] = "mlp"
    mask.save(tmp_path / "mask_in.pt")
    out = tmp_path / "run"
    run_training(spec, Recipe(epochs=2, batch_size=64, augment=False), data_file=digits_npz,
                 mask_file=tmp_path / "mask_in.pt", out_dir=out, log=lambda m: None)
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"final_test_acc", "best_test_acc", "history", "seeds"} <= set(metrics)
    assert [h["epoch"] for h in metrics["history"]] == [1, 2]
    assert set(metrics["history"][0]) >= {"epoch", "train_loss", "test_loss", "test_acc", "density", "lr", "seconds"}
    assert metrics["best_test_acc"] >= metrics["final_test_acc"]
    assert not (out / "checkpoint.pt").exists()
    final = Mask.load(out / "mask.pt")
    assert all(torch.equal(final[k], mask[k]) for k in mask)
    state = torch.load(out / "model.pt", weights_only=True)
    assert all(torch.all(state[k][~mask[k]] == 0) for k in mask)


def test_seed_streams_are_distinct_and_stable():
    a, b = derive_seeds(0), derive_seeds(1)
    assert a == derive_seeds(0) and a != b
    assert len(set(a.values())) == 4


def test_recipe_rejects_unknown_keys():
    with pytest.raises(ValueError, match="unknwn"):
        Recipe.from_dict({"epochs": 1, "unknwn": 3})


def test_a_tracking_store_that_fails_fails_the_run_and_writes_no_metrics(digits_npz, tmp_path):
    """MLflow runs on a worker thread: its failure must still stop the job, not vanish with the thread."""
    spec = Run("digits", "mlp", "random", 0.2, 0, study="phew")
    ds = data.load(digits_npz)
    model = build_model("mlp", ds.num_classes, ds.input_shape, seed=derive_seeds(0)["weight_seed"])
    build_mask("random", model, 0.2, PruneInputs(seeded_generator(0), 10, ds.input_shape)).save(tmp_path / "m.pt")
    (tmp_path / "not-a-dir").write_text("a file where the store's folder should be")
    with pytest.raises(Exception, match="not-a-dir"):
        run_training(spec, Recipe(epochs=2, batch_size=64, augment=False), data_file=digits_npz,
                     mask_file=tmp_path / "m.pt", out_dir=tmp_path / "run", log=lambda m: None,
                     tracking_uri=f"sqlite:///{tmp_path / 'not-a-dir' / 'mlflow.db'}")
    assert not (tmp_path / "run" / "metrics.json").exists()


def _mask_file(digits_npz, tmp_path, model_name, density, seed=0):
    ds = data.load(digits_npz)
    seeds = derive_seeds(seed)
    model = build_model(model_name, ds.num_classes, ds.input_shape, seed=seeds["weight_seed"])
    mask = build_mask("random", model, density, PruneInputs(seeded_generator(seeds["mask_seed"]), 10, ds.input_shape))
    mask.meta["model"] = model_name
    mask.save(tmp_path / "mask_in.pt")
    return tmp_path / "mask_in.pt"


def test_eval_subset_tests_early_epochs_on_a_fixed_subset_and_the_last_on_everything(digits_npz, tmp_path):
    n_test = len(data.load(digits_npz).y_test)
    recipe = Recipe(epochs=3, batch_size=64, augment=False, eval_subset=100)
    runs = []
    for name in ("a", "b"):
        run_training(Run("digits", "mlp", "random", 0.2, 0, study="phew"), recipe, data_file=digits_npz,
                     mask_file=_mask_file(digits_npz, tmp_path, "mlp", 0.2), out_dir=tmp_path / name,
                     log=lambda m: None)
        runs.append(json.loads((tmp_path / name / "metrics.json").read_text()))
    history = runs[0]["history"]
    assert [h["test_images"] for h in history] == [100, 100, n_test]
    assert runs[0]["final_test_acc"] == history[-1]["test_acc"]
    assert all(abs(h["test_acc"] * 100 - round(h["test_acc"] * 100)) < 1e-9 for h in history[:2])  # k / 100
    strip = [{k: v for k, v in h.items() if k != "seconds"} for h in history]
    assert strip == [{k: v for k, v in h.items() if k != "seconds"} for h in runs[1]["history"]]  # a fixed subset


def test_dnw_records_its_structure_at_init_as_epoch_zero(digits_npz, tmp_path):
    """Claim C6 needs the structure before the first step: DNW's per-layer top-k of the initial |w|."""
    out = tmp_path / "run"
    run_training(Run("digits", "convnet", "dnw", 0.2, 0, study="deconstructing"),
                 Recipe(epochs=2, batch_size=64, augment=False), data_file=digits_npz,
                 mask_file=_mask_file(digits_npz, tmp_path, "convnet", 0.2), out_dir=out, topology="dnw",
                 log=lambda m: None)
    history = json.loads((out / "structure.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [0, 1, 2]
    assert history[0]["overlap_prev"] != history[0]["overlap_prev"]  # NaN: nothing before the init
    assert 0 < history[0]["overlap_final"] < 1 and history[1]["overlap_prev"] < 1  # the first epoch moved it
    ds = data.load(digits_npz)
    init = build_model("convnet", ds.num_classes, ds.input_shape, seed=derive_seeds(0)["weight_seed"])
    start = Mask.load(tmp_path / "mask_in.pt")
    for name, w in prunable(init).items():  # in-degree at epoch 0 = that of the top-k of |w_init|
        keep = torch.zeros(w.numel(), dtype=torch.bool)
        keep[w.detach().abs().flatten().topk(int(start[name].sum())).indices] = True
        expected = keep.view(w.shape).flatten(1).sum(1).tolist()
        assert history[0]["in_degree"][name][0] == expected, name
