"""`make gpu-check` on a machine without CUDA: it skips cleanly; its GPU path, run on the CPU, reports every field."""
from __future__ import annotations

import json
import subprocess

import pytest
import torch

from conftest import PY
from sparsenets.gpu_check import recommend

CONFIG_FIELDS = {"model", "runs_per_gpu", "images_per_s", "per_run_images_per_s", "seconds", "max_memory_mib",
                 "losses_finite", "pruned_weights_zero"}


def gpu_check(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-m", "sparsenets.gpu_check", *args], capture_output=True, text=True, timeout=600)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without CUDA")
def test_without_cuda_it_says_it_skipped_and_exits_0():
    done = gpu_check()
    assert done.returncode == 0, done.stderr
    assert "gpu-check skipped: no CUDA device" in done.stdout


def test_the_gpu_path_on_the_cpu_reports_every_field_and_checks_the_mask():
    done = gpu_check("--device", "cpu", "--models", "resnet20", "--runs", "2", "--images", "192",
                     "--batch-size", "64")  # two processes at once: the parallel path, cheaply
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert {"device", "torch", "precision", "channels_last", "batch_size", "images", "configs",
            "recommended_runs_per_gpu"} <= set(report)
    assert [(c["model"], c["runs_per_gpu"]) for c in report["configs"]] == [("resnet20", 2)]
    for config in report["configs"]:
        assert set(config) == CONFIG_FIELDS
        assert config["images_per_s"] > 0 and len(config["per_run_images_per_s"]) == config["runs_per_gpu"]
        assert config["losses_finite"] and config["pruned_weights_zero"]
    assert report["recommended_runs_per_gpu"] == {"resnet20": 2}  # the only one tried, and it passed


def test_more_runs_are_recommended_only_while_they_buy_ten_percent_and_pass_the_checks():
    def config(runs: int, rate: float, ok: bool = True) -> dict:
        return {"model": "m", "runs_per_gpu": runs, "images_per_s": rate, "losses_finite": True,
                "pruned_weights_zero": ok}

    assert recommend([config(1, 100), config(2, 150), config(4, 160), config(8, 400)]) == {"m": 2}
    assert recommend([config(1, 100), config(2, 150, ok=False), config(4, 300)]) == {"m": 1}
    assert recommend([config(1, 100), {**config(2, 0.0), "error": "out of memory"}]) == {"m": 1}


def test_slice_without_the_dataset_names_the_file(tmp_path):
    done = gpu_check("--device", "cpu", "--slice", "--data", str(tmp_path / "cifar10.npz"))
    assert done.returncode == 2 and f"--slice needs {tmp_path / 'cifar10.npz'}" in done.stderr
    assert "Traceback" not in done.stderr
