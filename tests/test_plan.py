"""The plan's job counts are the grid's (sparsenets.study.expand); its hours follow from per-epoch costs."""
from __future__ import annotations

from collections import Counter

import pytest
import yaml

from conftest import REPO
from sparsenets import data
from sparsenets.study import expand
from sparsenets.plan import DATASET_SIZES, EpochCost, StudyPlan, format_plan, measure_cpu, plan


def test_tiny_plan_counts_the_grids_jobs_per_study():
    preset, plans = plan("tiny", REPO / "config.yaml")
    whole = Counter(j.kind for j in expand(yaml.safe_load((REPO / "config.yaml").read_text()), "tiny"))
    assert preset == "tiny" and [p.study for p in plans] == ["phew", "deconstructing"]
    for kind in ("mask", "imp_mask", "mask_layer_matched", "train", "train_dense", "train_reinit", "sensitivity"):
        assert sum(p.jobs.get(kind, 0) for p in plans) == whole.get(kind, 0), kind
    assert plans[0].jobs["train"] == 18 and "imp_mask" not in plans[0].jobs  # PHEW: 9 methods x 2 densities
    assert all(c.cpu > 0 and c.gpu > 0 for p in plans for c in p.costs)
    text = format_plan(preset, plans)
    assert "phew" in text and "deconstructing" in text and "digits/convnet" in text
    with pytest.raises(ValueError, match="'preset': 'nope'"):
        plan("nope", REPO / "config.yaml")


def test_hours_share_training_runs_evenly_among_networks():
    costs = [EpochCost("cifar10", "vgg19", cpu=10.0, gpu=1.0), EpochCost("cifar10", "resnet20", cpu=20.0, gpu=2.0)]
    study = StudyPlan("phew", {"mask": 5, "train": 10, "train_reinit": 2}, epochs=3, costs=costs)
    assert study.hours("cpu") == pytest.approx(6 * 3 * (10 + 20) / 3600)  # 12 runs, 6 per network
    assert study.hours("gpu") == pytest.approx(6 * 3 * (1 + 2) / 3600)


@pytest.mark.parametrize("name", ["digits", "synthetic"])
def test_dataset_sizes_match_the_prepared_files(name, tmp_path):
    ds = data.load(data.prepare(name, tmp_path / f"{name}.npz"))
    assert DATASET_SIZES[name] == (len(ds.y_train), len(ds.y_test), tuple(ds.input_shape), ds.num_classes)


def test_measured_throughput_is_positive_and_testing_is_cheaper():
    train, test = measure_cpu("mlp", "digits", batch=64)
    assert 0 < train < test
    with pytest.raises(ValueError, match="no size known for dataset 'imagenet'"):
        measure_cpu("mlp", "imagenet")
