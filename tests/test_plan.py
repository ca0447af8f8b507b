"""The plan's job counts are the grid's (sparsenets.study.expand); its hours follow from per-epoch costs."""
from __future__ import annotations

import json
import subprocess
from collections import Counter
from pathlib import Path

import pytest
import yaml

from conftest import PY, REPO
from sparsenets import data
from sparsenets.io import write_json
from sparsenets.plan import (EpochCost, StudyPlan, calibrate, dataset_facts, epoch_cost, format_plan, measure_cpu,
                             plan, recorded_jobs)
from sparsenets.study import expand


def test_tiny_plan_counts_the_grids_jobs_per_study():
    preset, plans = plan("tiny", REPO / "config.yaml")
    whole = Counter(j.kind for j in expand(yaml.safe_load((REPO / "config.yaml").read_text()), "tiny"))
    assert preset == "tiny" and [p.study for p in plans] == ["phew", "deconstructing", "deconstructing-erk",
                                                             "deconstructing-global-layers"]
    for kind in ("mask", "imp_mask", "mask_layer_matched", "train", "train_dense", "train_reinit", "sensitivity"):
        assert sum(p.jobs.get(kind, 0) for p in plans) == whole.get(kind, 0), kind
    assert plans[0].jobs["train"] == 22 and "imp_mask" not in plans[0].jobs  # PHEW: 11 methods x 2 densities
    assert all(c.cpu > 0 and c.gpu > 0 for p in plans for c in p.costs)
    text = format_plan(preset, plans)
    assert "phew" in text and "deconstructing" in text and "digits/convnet" in text
    with pytest.raises(ValueError, match="'preset': 'nope'"):
        plan("nope", REPO / "config.yaml")


def test_hours_sum_epochs_times_seconds_over_the_training_jobs_left_or_all():
    costs = [EpochCost("cifar10", "vgg19", cpu=10.0, gpu=1.0), EpochCost("cifar10", "resnet20", cpu=20.0, gpu=2.0)]
    training = [("cifar10", "vgg19", 3, True), ("cifar10", "vgg19", 3, False), ("cifar10", "resnet20", 10, False)]
    study = StudyPlan("phew", {"mask": 5, "train": 3}, epochs=3, costs=costs, training=training)
    assert study.hours("cpu") == pytest.approx((3 * 10 + 3 * 10 + 10 * 20) / 3600)
    assert study.hours("gpu", remaining=True) == pytest.approx((3 * 1 + 10 * 2) / 3600)


def write_run(root: Path, study: str, name: str, seconds: list[float], device: str | None) -> None:
    dataset, model = name.split("/")[:2]
    metrics = {"spec": {"dataset": dataset, "model": model}, "history": [{"seconds": s} for s in seconds]}
    if device is not None:
        metrics["device"] = device
    write_json(root / study / "runs" / name / "metrics.json", metrics)


def test_calibration_averages_each_networks_measured_epochs_per_device(tmp_path):
    write_run(tmp_path, "phew", "cifar10/resnet20/phew/d0.1/s0", [2.0, 4.0], "NVIDIA H100")
    write_run(tmp_path, "phew", "cifar10/resnet20/snip/d0.1/s0", [5.0, 5.0], "NVIDIA H100")
    write_run(tmp_path, "phew", "cifar10/resnet20/snip/d0.1/s1", [40.0], "cpu")
    write_run(tmp_path, "phew", "cifar10/vgg19/snip/d0.1/s1", [9.0], None)  # before devices were recorded
    measured = calibrate(tmp_path)
    assert measured[("phew", "cifar10", "resnet20")] == {"NVIDIA H100": (4.0, 2), "cpu": (40.0, 1)}
    cost = epoch_cost("cifar10", "resnet20", {}, measured[("phew", "cifar10", "resnet20")])
    assert (cost.gpu, cost.cpu) == (4.0, 40.0) and "NVIDIA H100 in 2 run(s)" in cost.gpu_source
    unknown = epoch_cost("digits", "mlp", {}, measured[("phew", "cifar10", "vgg19")])
    assert unknown.gpu_source.startswith("assumed")  # a device nobody recorded prices nothing
    with pytest.raises(FileNotFoundError, match="--calibrate .*nope"):
        calibrate(tmp_path / "nope")


@pytest.mark.e2e
def test_calibrated_plan_of_the_tiny_run_prices_its_measured_seconds_and_counts_what_is_left(tiny_run, tmp_path):
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["presets"]["tiny"]["studies"]["phew"]["seeds"] = [0, 1]  # seed 1 was never run
    configfile = tmp_path / "config.yaml"
    configfile.write_text(yaml.safe_dump(config))
    done = subprocess.run([PY, "-m", "sparsenets", "plan", "--preset", "tiny", "--configfile", str(configfile),
                           "--calibrate", str(tiny_run / "results")], cwd=tiny_run, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    for study, network in (("phew", "digits/mlp"), ("deconstructing", "digits/convnet")):
        runs = [json.loads(p.read_text()) for p in (tiny_run / "results" / study / "runs").rglob("metrics.json")]
        per_epoch = [sum(h["seconds"] for h in r["history"]) / len(r["history"]) for r in runs]
        measured = sum(per_epoch) / len(per_epoch)
        assert f"{network}: {measured:.3g} s on the CPU (measured in {len(runs)} run(s))" in done.stdout
    jobs = [j for j in expand(config, "tiny") if j.study == "phew" and j.kind in ("train", "train_reinit")]
    left = [j for j in jobs if j.run.seed == 1]
    assert 0 < len(left) < len(jobs)
    row = next(line for line in done.stdout.split("left to run")[1].splitlines() if line.startswith("phew "))
    assert row.split()[4] == str(sum(j.kind == "train" for j in left)), done.stdout  # the training column


@pytest.mark.parametrize("name", ["digits", "synthetic"])
def test_dataset_sizes_match_the_prepared_files(name, tmp_path):
    ds = data.load(data.prepare(name, tmp_path / f"{name}.npz"))
    assert dataset_facts(name) == (len(ds.y_train), len(ds.y_test), tuple(ds.input_shape), ds.num_classes)


def test_measured_throughput_is_positive_and_an_unknown_dataset_is_named():
    train, test = measure_cpu("mlp", "digits", batch=64)
    assert train > 0 and test > 0  # images per second; which is faster is the benchmarks' business, not a test's
    with pytest.raises(ValueError, match="no size known for dataset 'imagenet'"):
        measure_cpu("mlp", "imagenet")


@pytest.mark.e2e
def test_snakemakes_records_price_every_job_of_the_tiny_run(tiny_run):
    """`recorded_jobs` finds each finished job of the tiny run once (Snakemake's own start and end times), so
    `plan --calibrate` prices every rule of the preset and sets the estimate beside the measured span."""
    jobs = recorded_jobs(tiny_run / "results")
    expected = Counter(j.kind for j in expand(yaml.safe_load((REPO / "config.yaml").read_text()), "tiny"))
    assert Counter(rule for rule, _, _ in jobs) == expected
    assert all(end >= start for _, start, end in jobs)
    done = subprocess.run([PY, "-m", "sparsenets", "plan", "--preset", "tiny", "--calibrate", str(tiny_run / "results"),
                           "--cores", "4"], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert f"measured by Snakemake: {len(jobs)} finished jobs" in done.stdout
    assert "at 4 job(s) at once" in done.stdout and "not priced" not in done.stdout
