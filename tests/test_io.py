"""The one writer: whole or nothing, durable, and deterministic; and the jobs that need no torch import none."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from sparsenets import io


def test_writes_whole_files_into_new_folders(tmp_path):
    io.write_text(tmp_path / "a" / "b" / "t.txt", "héllo\n")
    io.write_json(tmp_path / "c" / "m.json", {"n": np.int64(3), "x": np.float32(0.5)})
    io.save_npz(tmp_path / "d" / "arrays.npz", {"x": np.arange(4)})
    assert (tmp_path / "a" / "b" / "t.txt").read_text(encoding="utf-8") == "héllo\n"
    assert json.loads((tmp_path / "c" / "m.json").read_text()) == {"n": 3, "x": 0.5}
    assert np.load(tmp_path / "d" / "arrays.npz")["x"].tolist() == [0, 1, 2, 3]
    assert not list(tmp_path.rglob(".*.tmp"))


def test_a_failed_write_leaves_neither_file_nor_temporary(tmp_path):
    class Boom(Exception):
        pass

    target = tmp_path / "out.bin"
    with pytest.raises(Boom), io.atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise Boom
    assert list(tmp_path.iterdir()) == []
    io.write_text(target, "old")
    with pytest.raises(TypeError):
        io.write_json(target, {"x": object()})  # fails before a byte is written: the old file stays
    with pytest.raises(Boom), io.atomic_path(target) as tmp:
        tmp.write_bytes(b"new but unfinished")
        raise Boom
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_file_and_folder_are_fsynced_before_and_after_the_rename(tmp_path, monkeypatch):
    synced, real = [], os.fsync

    def fsync(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    io.write_text(tmp_path / "f.txt", "x")
    assert synced == [str(tmp_path / ".f.txt.tmp"), str(tmp_path)]


def _imported_modules(args: list[str], cwd) -> list[str]:
    out = subprocess.run([sys.executable, "-X", "importtime", "-m", "sparsenets", *args], cwd=cwd,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    return [line.rsplit("|", 1)[-1].strip() for line in out.stderr.splitlines() if line.startswith("import time:")]


def test_table_figure_and_claims_jobs_import_no_torch(tmp_path):
    """Tables, figures and claims are pandas work: torch's import (seconds) would dominate each such job."""
    files = []
    for method in ("random", "snip"):
        for seed in (0, 1):
            spec = {"study": "phew", "dataset": "digits", "model": "mlp", "method": method, "density": "0.1",
                    "seed": seed, "variant": "original"}
            run = tmp_path / "runs" / method / f"s{seed}"
            run.mkdir(parents=True)
            files.append(run / "metrics.json")
            files[-1].write_text(json.dumps({"spec": spec, "density": 0.1, "final_test_acc": 0.8 + 0.01 * seed,
                                             "best_test_acc": 0.82, "final_train_loss": 0.3, "epochs": 2,
                                                 "history": [{"epoch": 1, "test_acc": 0.8, "train_loss": 0.3}]}))
    jobs = {"table": ["table", "--kind", "runs", "--out", "runs.csv", *map(str, files)],
            "figure": ["figure", "accuracy_vs_density", "--tables", "runs.csv", "--out", "acc.png", "acc.pdf"],
            "claims": ["claims", "--studies", json.dumps({"phew": {"protocol": "phew", "tables": {"runs": "runs.csv"}}}),
                       "--md", "claims.md", "--csv", "claims.csv"]}
    for job, args in jobs.items():  # in this order: each job reads what the one before wrote
        modules = _imported_modules(args, tmp_path)
        assert "pandas" in modules, job
        assert not [m for m in modules if m == "torch" or m.startswith("torch.")], job
    for out in ("runs.csv", "acc.png", "acc.pdf", "claims.md", "claims.csv"):
        assert (tmp_path / out).stat().st_size > 0
