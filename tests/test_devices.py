"""GPU claiming between real processes, on fake device ids (no GPU needed)."""
from __future__ import annotations

import select
import signal
import subprocess
from typing import IO

import pytest
import torch

from conftest import PY
from sparsenets.devices import claim_device

# Claims one of 2 fake GPUs, prints it, and holds it until its stdin closes.
HOLDER = """
import sys
from sparsenets.devices import claim_device
print(claim_device("auto", count=2, lock_dir=sys.argv[1], poll=0.05, timeout=60), flush=True)
sys.stdin.read()
"""


@pytest.fixture
def holder(tmp_path):
    """Starts holder processes on one lock dir; kills whatever is left at the end."""
    procs = []

    def start() -> subprocess.Popen:
        procs.append(subprocess.Popen([PY, "-c", HOLDER, str(tmp_path)], stdin=subprocess.PIPE,
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
    with pytest.raises(RuntimeError, match="no free GPU.*--resources gpu=2"):
        claim_device("auto", count=2, lock_dir=tmp_path, timeout=0.1, poll=0.05)

    first.stdin.close()  # the first job ends: the third takes its GPU
    first.wait(timeout=30)
    freed = claimed(third)
    assert freed in devices

    second.send_signal(signal.SIGKILL)  # a killed job leaves no stale lock
    second.wait(timeout=30)
    assert {claimed(holder()), freed} == devices


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
