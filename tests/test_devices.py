"""GPU claiming between real processes, on fake device ids (no GPU needed): whole GPUs and slots of one."""
from __future__ import annotations

import select
import signal
import subprocess
from typing import IO

import pytest
import torch
import yaml

from conftest import PY, REPO
from sparsenets.devices import _try_lock, claim_device, parse_share
from sparsenets.study import expand, gpu_share

# Claims a share (argv[2], "auto" = a whole GPU) of one of 2 fake GPUs, prints it, holds it until stdin closes.
HOLDER = """
import sys
from sparsenets.devices import claim_device
print(claim_device(sys.argv[2], count=2, lock_dir=sys.argv[1], poll=0.05, timeout=60), flush=True)
sys.stdin.read()
"""


@pytest.fixture
def holder(tmp_path):
    """Starts holder processes on one lock dir; kills whatever is left at the end."""
    procs = []

    def start(share: str = "auto") -> subprocess.Popen:
        procs.append(subprocess.Popen([PY, "-c", HOLDER, str(tmp_path), share], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        return procs[-1]

    yield start
    for proc in procs:
        proc.kill()
        proc.wait(timeout=30)


def read_line(stream: IO[str], timeout: float = 60) -> str:
    """The next line, or a failure rather than a hung test."""
    assert select.select([stream], [], [], timeout)[0], f"no line within {timeout}s"
    return stream.readline().strip()


def claimed(proc: subprocess.Popen) -> str:
    line = read_line(proc.stdout)
    assert line, proc.stderr.read()
    return line


def test_parallel_jobs_get_distinct_gpus_and_wait_for_a_free_one(holder, tmp_path):
    first, second = holder(), holder()
    devices = {claimed(first), claimed(second)}
    assert devices == {"cuda:0", "cuda:1"}

    third = holder()
    assert "waiting" in read_line(third.stderr)  # both are held
    with pytest.raises(RuntimeError, match="no GPU with 1 free slot.*--resources gpu=2"):
        claim_device("auto", count=2, lock_dir=tmp_path, timeout=0.1, poll=0.05)

    first.stdin.close()  # the first job ends: the third takes its GPU
    first.wait(timeout=30)
    freed = claimed(third)
    assert freed in devices

    second.send_signal(signal.SIGKILL)  # a killed job leaves no stale lock
    second.wait(timeout=30)
    assert {claimed(holder()), freed} == devices


def test_three_slots_per_gpu_never_exceed_three_jobs_per_device_nor_wait_while_one_is_free(holder, tmp_path):
    jobs = [holder("auto@1/3") for _ in range(6)]  # all at once: they race for the same lock files
    devices = [claimed(job) for job in jobs]
    assert sorted(devices) == ["cuda:0"] * 3 + ["cuda:1"] * 3
    for job in jobs:  # none of the six waited: a slot was free for each
        assert not select.select([job.stderr], [], [], 0)[0] or "waiting" not in job.stderr.readline()

    seventh = holder("auto@1/3")
    assert "waiting" in read_line(seventh.stderr)  # 6 of 6 slots held
    with pytest.raises(RuntimeError, match="gpu_slots=6"):
        claim_device("auto@1/3", count=2, lock_dir=tmp_path, timeout=0.1, poll=0.05)

    leaving = devices.index("cuda:1")
    jobs[leaving].send_signal(signal.SIGKILL)  # a killed job frees its slot
    jobs[leaving].wait(timeout=30)
    assert claimed(seventh) == "cuda:1"
    assert len(list(tmp_path.glob("gpu-*.slot*.lock"))) == 6


def test_a_job_taking_two_of_four_slots_gets_them_on_one_device(tmp_path):
    held = [_try_lock(tmp_path / f"gpu-{d}.slot{s}.lock") for d in (0, 1) for s in (0, 1, 2)]  # 3 of 4 on each
    assert all(held)
    with pytest.raises(RuntimeError, match="no GPU with 2 free slot"):  # 2 slots free, but on two devices
        claim_device("auto@2/4", count=2, lock_dir=tmp_path, timeout=0, poll=0.01)
    held[1].close()  # a job on device 0 ends: it has two free slots now
    assert claim_device("auto@2/4", count=2, lock_dir=tmp_path, timeout=0) == torch.device("cuda", 0)
    assert _try_lock(tmp_path / "gpu-0.slot1.lock") is None and _try_lock(tmp_path / "gpu-0.slot3.lock") is None


@pytest.mark.parametrize("bad", ["auto@0/4", "auto@5/4"])
def test_a_share_outside_the_slots_is_an_error_naming_it(bad):
    with pytest.raises(ValueError, match=f"device '{bad}'"):
        parse_share(bad)
    assert parse_share("cuda@2/4") == ("cuda", 2, 4) and parse_share("cpu") == ("cpu", 1, 1)


def test_one_process_keeps_its_one_gpu(tmp_path):
    device = claim_device("cuda", count=3, lock_dir=tmp_path)
    assert claim_device("auto", count=3, lock_dir=tmp_path) == device
    assert (tmp_path / f"gpu-{device.index}.lock").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU fallback")
def test_without_cuda_auto_is_the_cpu_and_cuda_is_an_error(tmp_path):
    assert claim_device("auto", lock_dir=tmp_path) == torch.device("cpu")
    with pytest.raises(RuntimeError, match="no CUDA device"):
        claim_device("cuda", lock_dir=tmp_path)
    assert not any(tmp_path.iterdir())


def test_explicit_devices_are_not_claimed(tmp_path):
    assert claim_device("cuda:1", count=2, lock_dir=tmp_path) == torch.device("cuda", 1)
    assert claim_device("cpu", count=2, lock_dir=tmp_path) == torch.device("cpu")
    assert not any(tmp_path.iterdir())


def test_runs_per_gpu_gives_each_models_jobs_their_share_of_a_gpus_slots():
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    assert {j.params["device"] for j in expand(config, "tiny") if "device" in j.params} <= {"auto", "cpu"}
    config["runs_per_gpu"] = {"default": 1, "mlp": 4, "convnet": 2}  # 4 slots per GPU: 1 per mlp job, 2 per convnet
    assert gpu_share(config, "mlp") == (1, 4) and gpu_share(config, "convnet") == (2, 4)
    assert gpu_share(config, "resnet18") == (4, 4) and gpu_share({"runs_per_gpu": 3}, "vgg19") == (1, 3)
    devices = {(j.run.model, j.kind, j.params["device"]) for j in expand(config, "tiny")
               if j.kind in ("mask", "train", "sensitivity")}
    assert {(model, device) for model, _, device in devices} == {("mlp", "auto@1/4"), ("convnet", "auto@2/4")}
    assert {kind for _, kind, _ in devices} == {"mask", "train", "sensitivity"}
    assert parse_share("auto@2/4") == ("auto", 2, 4)
