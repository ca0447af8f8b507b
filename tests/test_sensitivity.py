"""Further pruning of a trained run: exact counts, nested removals, f = 0 is the run, the run untouched; every
reading of the open choices (global or per-layer ranking, stale or recalibrated BN) in one job."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from sparsenets import data, tables
from sparsenets.experiments import make_mask, run_training
from sparsenets.study import Run
from sparsenets.masks import Mask, keep_count, prunable
from sparsenets.models import build_model
from sparsenets.sensitivity import (MODES, RANKINGS, _scores, curve, further_masks, recalibrate_bn, run_curve,
                                    with_test_subset)
from sparsenets.train import Recipe, evaluate, seeded_generator

FRACTIONS = [0.0, 0.3, 0.6, 0.9]


@pytest.fixture(scope="module")
def run(digits_npz, tmp_path_factory):
    """A convnet trained for two epochs under a random mask, with the files a real run writes."""
    out = tmp_path_factory.mktemp("run")
    make_mask("convnet", digits_npz, "random", 0.3, 0, out / "mask_in.pt", device="cpu")
    run_training(Run("digits", "convnet", "random", 0.3, 0, study="deconstructing"),
                 Recipe(epochs=2, batch_size=64, lr=0.05, milestones=(), augment=False),
                 data_file=digits_npz, mask_file=out / "mask_in.pt", out_dir=out, device="cpu", log=lambda m: None)
    mask = Mask.load(out / "mask.pt")
    model = build_model("convnet", mask.meta["num_classes"], tuple(mask.meta["input_shape"]))
    model.load_state_dict(torch.load(out / "model.pt", weights_only=True))
    return out, model, mask, data.load(digits_npz)


def test_curve_counts_rows_and_leaves_the_model_alone(run):
    _, model, mask, ds = run
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rows = curve(model, mask, ds, FRACTIONS, generator=seeded_generator(0), device="cpu", recal_images=1536)
    assert len(rows) == len(MODES) * len(RANKINGS) * len(FRACTIONS) * 2
    assert {(r["mode"], r["ranking"], r["fraction"], r["bn_recalibrated"]) for r in rows} == {
        (m, k, f, b) for m in MODES for k in RANKINGS for f in FRACTIONS for b in (False, True)}
    layer_kept = {f: sum(keep_count(1 - f, int(m.sum())) for m in mask.values()) for f in FRACTIONS}
    assert all(r["kept"] == keep_count(1 - r["fraction"], mask.kept) for r in rows if r["ranking"] == "global")
    assert all(r["kept"] == layer_kept[r["fraction"]] for r in rows if r["ranking"] == "layer")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(m.momentum == 0.1 for m in model.modules() if isinstance(m, nn.BatchNorm2d))


def test_no_further_pruning_reproduces_the_run(run):
    out, model, mask, ds = run
    test = data.DeviceLoader(ds.x_test, ds.y_test, batch_size=512, device="cpu", mean=ds.mean, std=ds.std,
                             train=False, seed=0)
    loss, acc = evaluate(model, test)
    rows = curve(model, mask, ds, [0.0], generator=seeded_generator(0), device="cpu", recal_images=1536)
    stale = [r for r in rows if not r["bn_recalibrated"]]
    assert [(r["test_acc"], r["test_loss"]) for r in stale] == [(acc, loss)] * len(MODES) * len(RANKINGS)
    assert acc == json.loads((out / "metrics.json").read_text())["final_test_acc"]


def test_further_masks_are_nested_and_magnitude_drops_the_smallest(run):
    _, model, mask, _ = run
    weights = {k: w.detach() for k, w in prunable(model).items()}
    masks = list(further_masks(mask, _scores(model, mask, "magnitude", seeded_generator(0)), FRACTIONS))
    assert all(torch.equal(masks[0][k], mask[k]) for k in mask)
    for wider, narrower in zip(masks, masks[1:]):
        assert all(torch.all(wider[k] | ~narrower[k]) for k in mask)  # narrower ⊆ wider
    last = masks[-1]
    smallest_kept = min(float(weights[k].abs()[last[k]].min()) for k in mask if last[k].any())
    largest_dropped = max(float(weights[k].abs()[mask[k] & ~last[k]].max()) for k in mask if (mask[k] & ~last[k]).any())
    assert smallest_kept >= largest_dropped


def test_layer_ranking_removes_the_same_fraction_in_each_layer_by_magnitude_there(run):
    _, model, mask, _ = run
    weights = {k: w.detach() for k, w in prunable(model).items()}
    scores = _scores(model, mask, "magnitude", seeded_generator(0))
    per_layer = list(further_masks(mask, scores, FRACTIONS, "layer"))
    for f, m in zip(FRACTIONS, per_layer):
        assert [int(m[k].sum()) for k in mask] == [keep_count(1 - f, int(mask[k].sum())) for k in mask]
    for wider, narrower in zip(per_layer, per_layer[1:]):
        assert all(torch.all(wider[k] | ~narrower[k]) for k in mask)  # nested within each layer too
    last = per_layer[-1]
    for k in mask:  # within a layer the smallest |w| go first
        dropped = mask[k] & ~last[k]
        if last[k].any() and dropped.any():
            assert float(weights[k].abs()[last[k]].min()) >= float(weights[k].abs()[dropped].max())
    global_ = list(further_masks(mask, scores, [0.9]))[0]
    assert [int(global_[k].sum()) for k in mask] != [int(last[k].sum()) for k in mask]  # a different reading
    with pytest.raises(ValueError, match="unknown further-pruning ranking 'row'"):
        next(further_masks(mask, scores, [0.5], "row"))


def test_one_job_holds_every_reading_and_they_differ(run):
    _, model, mask, ds = run
    rows = curve(model, mask, ds, FRACTIONS, generator=seeded_generator(0), device="cpu", recal_images=1536)

    def acc(mode, ranking, recal, f):
        [r] = [r for r in rows if (r["mode"], r["ranking"], r["bn_recalibrated"], r["fraction"]) == (mode, ranking,
                                                                                                         recal, f)]
        return r["test_acc"]

    at_zero = {acc(m, k, b, 0.0) for m in MODES for k in RANKINGS for b in (False,)}
    assert len(at_zero) == 1  # nothing removed: the same network whatever the reading
    high = {(k, b): acc("magnitude", k, b, 0.9) for k in RANKINGS for b in (False, True)}
    assert len(set(high.values())) > 1  # the readings measure different things at f = 0.9


def test_random_further_pruning_follows_the_generator(run):
    _, model, mask, _ = run

    def draw(seed):
        return list(further_masks(mask, _scores(model, mask, "random", seeded_generator(seed)), [0.5]))[0]

    a, b, c = draw(1), draw(1), draw(2)
    assert all(torch.equal(a[k], b[k]) for k in mask)
    assert not all(torch.equal(a[k], c[k]) for k in mask)
    assert all(torch.all(mask[k] | ~a[k]) for k in mask)  # only kept weights can stay


def test_recalibration_is_the_plain_average_of_batch_statistics(run):
    _, model, _, ds = run
    net = build_model("convnet", ds.num_classes, ds.input_shape)
    net.load_state_dict(model.state_dict())
    loader = data.DeviceLoader(ds.x_train, ds.y_train, batch_size=100, device="cpu", mean=ds.mean, std=ds.std,
                               train=True, seed=0, augment=False)
    stale = net.bn1.running_mean.clone()
    recalibrate_bn(net, loader, 3)
    with torch.no_grad():
        batch_means = [net.conv1(x).mean((0, 2, 3)) for _, (x, _) in zip(range(3), loader.epoch(0))]
    assert not torch.allclose(net.bn1.running_mean, stale)
    torch.testing.assert_close(net.bn1.running_mean, torch.stack(batch_means).mean(0))
    assert int(net.bn1.num_batches_tracked) == 3 and not net.training


def test_run_curve_reads_a_run_folder_into_the_sensitivity_table(run, digits_npz, tmp_path):
    out, *_ = run
    result = run_curve(out, digits_npz, [0.0, 0.5], seed=0, device="cpu")
    assert result["spec"]["method"] == "random" and result["spec"]["density"] == "0.3"
    final = json.loads((out / "metrics.json").read_text())["final_test_acc"]
    assert [r["test_acc"] for r in result["rows"] if r["fraction"] == 0 and not r["bn_recalibrated"]] == [final] * 4
    (tmp_path / "curve.json").write_text(json.dumps(result))
    table = tables.sensitivity_table([tmp_path / "curve.json"])
    assert len(table) == 2 * 2 * 2 * 2 and table["density"].eq(0.3).all() and table["seed"].eq(0).all()
    assert {"dataset", "model", "method", "mode", "ranking", "bn_recalibrated", "fraction", "test_acc",
            "kept"} <= set(table)
    assert result["num_classes"] == 10 and table["num_classes"].eq(10).all()  # digits: chance is 1/10
    assert result["test_size"] == len(data.load(digits_npz).y_test) and table["test_size"].eq(result["test_size"]).all()
    del result["num_classes"]
    (tmp_path / "old.json").write_text(json.dumps(result))
    with pytest.raises(ValueError, match="old.json has no num_classes"):
        tables.sensitivity_table([tmp_path / "old.json"])


def test_bad_fraction_and_revived_weights_are_errors(run, digits_npz, tmp_path):
    out, model, mask, ds = run
    with pytest.raises(ValueError, match=r"\[1.0\]"):
        curve(model, mask, ds, [0.5, 1.0], generator=seeded_generator(0), device="cpu")
    for name in ("mask.pt", "metrics.json"):
        (tmp_path / name).write_bytes((out / name).read_bytes())
    dense = {k: v + 1 if k in mask else v for k, v in model.state_dict().items()}
    torch.save(dense, tmp_path / "model.pt")
    with pytest.raises(ValueError, match="non-zero weights outside"):
        run_curve(tmp_path, digits_npz, [0.0], seed=0, device="cpu")


def test_one_curve_file_gives_c5_every_reading(run, digits_npz, tmp_path):
    """A real job's curve.json, read into the sensitivity table, lets C5 be judged under all four readings (the
    same run stands in for random and imp: identical curves, so no reading can say reproduced)."""
    from sparsenets import claims

    out, *_ = run
    result = run_curve(out, digits_npz, FRACTIONS, seed=0, device="cpu")
    files = []
    for method in ("random", "imp"):
        files.append(tmp_path / f"{method}.json")
        files[-1].write_text(json.dumps({**result, "spec": {**result["spec"], "method": method}}))
    table = claims._prepare(tables.sensitivity_table(files))
    found = claims.c5(table, claims.ClaimOptions())
    assert set(found.readings) == {claims.reading_name(r, b) for r in RANKINGS for b in ("stale", "recalibrated")}
    assert claims.REPRODUCED not in found.readings.values() and found.verdict == found.readings["ranking=global, bn=stale"]


def test_a_test_subset_is_fixed_recorded_and_the_whole_set_by_default(run, digits_npz):
    out, *_ = run
    ds = data.load(digits_npz)
    a, b = with_test_subset(ds, 100), with_test_subset(ds, 100)
    assert len(a.y_test) == 100 and (a.x_test == b.x_test).all() and (a.y_train == ds.y_train).all()
    assert with_test_subset(ds, 0) is ds and with_test_subset(ds, len(ds.y_test) + 1) is ds
    result = run_curve(out, digits_npz, [0.0], seed=0, device="cpu", test_images=100)
    assert result["test_size"] == 100  # the claims widen their intervals by this many images' noise
    assert result["test_size"] < run_curve(out, digits_npz, [0.0], seed=0, device="cpu")["test_size"]
    with pytest.raises(ValueError, match="test_images must be"):
        run_curve(out, digits_npz, [0.0], seed=0, device="cpu", test_images=-1)
