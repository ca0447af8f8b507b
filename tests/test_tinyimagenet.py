"""Tiny-ImageNet: the converter on a small archive in the real layout, its errors, and the dataset
through the real Snakemake rules (dataset, mask, one training epoch).

The archive is written here: 3 classes of wnids.txt, JPEGs numbered so that a lexical sort would put
10 before 2, one greyscale image, and a val folder labelled by val_annotations.txt. Its md5 is not the
real one and it has 3 classes, not 200, so each test registers its own entry (`register`: the test
archive's md5 and class count); the production entry keeps the real md5 and a test checks that it does.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from torch.profiler import ProfilerActivity, profile

from conftest import REPO, snakemake
from sparsenets import catalogue, data
from sparsenets.data import DataError, DeviceLoader

ROOT = "tiny-imagenet-200"
WNIDS = ["n01443537", "n01629819", "n01641577"]
TRAIN_K = [0, 1, 2, 10]  # numeric order; a lexical sort would give 0, 1, 10, 2
VAL = [("val_0.JPEG", 2), ("val_10.JPEG", 0), ("val_2.JPEG", 1), ("val_1.JPEG", 0), ("val_3.JPEG", 2), ("val_4.JPEG", 1)]


def colour(c: int, k: int) -> tuple[int, int, int]:
    """A solid colour per image, so that decoded pixels (JPEG is lossy) still say which image it is."""
    return (40 * c + 20, 15 * k + 10, 200 - 30 * c)


def jpeg(rgb: tuple[int, int, int], grey: bool = False) -> bytes:
    img = Image.new("RGB", (64, 64), rgb)
    buf = io.BytesIO()
    (img.convert("L") if grey else img).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def write_archive(path: Path, *, annotations: bool = True) -> Path:
    """A Tiny-ImageNet zip in the real layout (the unlabelled test folder included, which is ignored)."""
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{ROOT}/wnids.txt", "\n".join(WNIDS) + "\n")
        zf.writestr(f"{ROOT}/words.txt", "".join(f"{w}\tthing {i}\n" for i, w in enumerate(WNIDS)))
        for c, w in enumerate(WNIDS):
            zf.writestr(f"{ROOT}/train/{w}/{w}_boxes.txt", "")
            for k in TRAIN_K:
                zf.writestr(f"{ROOT}/train/{w}/images/{w}_{k}.JPEG", jpeg(colour(c, k), grey=(c, k) == (1, 2)))
        lines = []
        for name, c in VAL:
            k = int(name[4:-5])
            zf.writestr(f"{ROOT}/val/images/{name}", jpeg(colour(c, 3 + k)))
            lines.append(f"{name}\t{WNIDS[c]}\t0\t0\t63\t63\n")
        if annotations:
            zf.writestr(f"{ROOT}/val/val_annotations.txt", "".join(lines))
        zf.writestr(f"{ROOT}/test/images/test_0.JPEG", jpeg((0, 0, 0)))
    return path


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def register(monkeypatch: pytest.MonkeyPatch, md5sum: str) -> None:
    """The test archive's md5 and class count, for this test only; the production table is restored after."""
    source = data.DATASETS["tiny-imagenet"]
    archives = tuple(dataclasses.replace(a, md5=md5sum) for a in source.archives)
    monkeypatch.setitem(data.DATASETS, "tiny-imagenet", dataclasses.replace(source, archives=archives))
    entry = dataclasses.replace(catalogue.DATASETS["tiny-imagenet"], classes=len(WNIDS))
    monkeypatch.setitem(catalogue.DATASETS, "tiny-imagenet", entry)


@pytest.fixture
def archive(tmp_path) -> Path:
    return write_archive(tmp_path / "tiny-imagenet-200.zip")


def test_production_entry_is_the_official_archive_over_https():
    [a] = data.DATASETS["tiny-imagenet"].archives
    assert a.url == "https://cs231n.stanford.edu/tiny-imagenet-200.zip" and a.filename == "tiny-imagenet-200.zip"
    assert a.md5 == "90528d7ca1a48142e341f4ef8d21d0de"
    assert (catalogue.DATASETS["tiny-imagenet"].shape, catalogue.DATASETS["tiny-imagenet"].classes) == ((3, 64, 64), 200)


def test_archive_converts_to_the_npz_contract_in_wnids_order(archive, monkeypatch):
    register(monkeypatch, md5(archive))
    out = data.prepare("tiny-imagenet", archive.with_name("tiny-imagenet.npz"))
    ds = data.load(out)
    assert ds.classes == WNIDS and ds.input_shape == (3, 64, 64)
    assert ds.x_train.shape == (12, 64, 64, 3) and ds.x_test.shape == (6, 64, 64, 3) and ds.x_train.dtype == np.uint8
    np.testing.assert_array_equal(ds.y_train, np.repeat([0, 1, 2], len(TRAIN_K)))
    # every image is the colour it was written with (JPEG: within a few levels), in numeric order
    expected = np.array([colour(c, k) for c in range(3) for k in TRAIN_K], float)
    grey = 1 * len(TRAIN_K) + TRAIN_K.index(2)
    got = ds.x_train.reshape(12, -1, 3).mean(1)
    assert np.abs(np.delete(got - expected, grey, 0)).max() < 4
    assert np.ptp(got[grey]) < 1  # greyscale decoded as three equal channels
    # val images sorted by their number, labelled from val_annotations.txt
    val = sorted(VAL, key=lambda v: int(v[0][4:-5]))
    np.testing.assert_array_equal(ds.y_test, [c for _, c in val])
    want = np.array([colour(c, 3 + int(n[4:-5])) for n, c in val], float)
    assert np.abs(ds.x_test.reshape(6, -1, 3).mean(1) - want).max() < 4


def test_wrong_checksum_names_the_archive_and_writes_nothing(archive):
    out = archive.with_name("tiny-imagenet.npz")  # the real md5 is registered: the test archive cannot match it
    with pytest.raises(DataError, match=rf"{archive} has md5 {md5(archive)}, expected 90528d7ca1a48142e341f4ef8d21d0de"):
        data.prepare("tiny-imagenet", out)
    assert sorted(p.name for p in archive.parent.iterdir()) == [archive.name]


def test_missing_annotations_name_the_file_and_write_nothing(tmp_path, monkeypatch):
    archive = write_archive(tmp_path / "tiny-imagenet-200.zip", annotations=False)
    register(monkeypatch, md5(archive))
    with pytest.raises(DataError, match=rf"{archive} lacks {ROOT}/val/val_annotations.txt"):
        data.prepare("tiny-imagenet", tmp_path / "tiny-imagenet.npz")
    assert sorted(p.name for p in tmp_path.iterdir()) == [archive.name]


def test_an_annotation_of_an_unknown_class_is_named(tmp_path, monkeypatch):
    archive = write_archive(tmp_path / "tiny-imagenet-200.zip")
    with zipfile.ZipFile(archive, "a") as zf, pytest.warns(UserWarning, match="Duplicate name"):
        zf.writestr(f"{ROOT}/val/val_annotations.txt", "val_0.JPEG\tn99999999\t0\t0\t1\t1\n")
    register(monkeypatch, md5(archive))
    with pytest.raises(DataError, match=r"val_annotations.txt has a line 'val_0.JPEG\\tn99999999.*not a class"):
        data.prepare("tiny-imagenet", tmp_path / "tiny-imagenet.npz")


# ------------------------------------------------------------------------------- serving
@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device"))])
def test_device_loader_holds_the_split_once_as_uint8_and_never_copies_it(device):
    """Tiny-ImageNet's training split is 1.2 GB as uint8 (4.9 GB as float): it is put on the device once
    and each epoch gathers batches from it. On the CPU the loader holds the npz's own buffer."""
    x = np.random.default_rng(0).integers(0, 256, (128, 64, 64, 3), dtype=np.uint8)
    loader = DeviceLoader(x, np.arange(128) % 3, batch_size=8, device=device, mean=[0.5] * 3, std=[0.25] * 3,
                          train=True, seed=0)
    assert loader.x.dtype == torch.uint8 and loader.x.device.type == device
    if device == "cpu":
        assert loader.x.data_ptr() == x.ctypes.data
    ptr = loader.x.data_ptr()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with profile(activities=activities, profile_memory=True) as prof:
        for epoch in range(2):
            assert sum(len(xb) for xb, _ in loader.epoch(epoch)) == 128
    assert loader.x.data_ptr() == ptr
    # the largest allocation is a float batch (8 x 3 x 64 x 64 x 4 = 393,216 bytes), never a split-sized copy
    largest = max(max(e.cpu_memory_usage, getattr(e, "device_memory_usage", 0)) for e in prof.events())
    assert 0 < largest < x.nbytes / 3


# --------------------------------------------------------------------- through the real workflow
# The rules run `python -m sparsenets ...` in subprocesses, so the test archive's md5 and class count
# are registered there (data's archive, the catalogue's classes) by a sitecustomize on PYTHONPATH, once sparsenets.data is imported; production
# code has no way to override a checksum.
SITECUSTOMIZE = '''
import dataclasses, importlib.abc, importlib.machinery, sys

class _Patch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "sparsenets.data":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            src = module.DATASETS["tiny-imagenet"]
            archives = tuple(dataclasses.replace(a, md5={md5!r}) for a in src.archives)
            module.DATASETS["tiny-imagenet"] = dataclasses.replace(src, archives=archives)
            known = module.catalogue.DATASETS
            known["tiny-imagenet"] = dataclasses.replace(known["tiny-imagenet"], classes={classes})

        spec.loader.exec_module = exec_module
        return spec

sys.meta_path.insert(0, _Patch())
'''
RUN = "results/phew/runs/tiny-imagenet/resnet18-tin/phew/d0.05/s0"


@pytest.mark.e2e
@pytest.mark.snakemake
def test_tiny_imagenet_archive_runs_through_dataset_mask_and_training_rules(tmp_path, monkeypatch):
    work = tmp_path / "work"
    (work / "data").mkdir(parents=True)
    archive = write_archive(work / "data" / "tiny-imagenet-200.zip")
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(textwrap.dedent(SITECUSTOMIZE.format(md5=md5(archive), classes=len(WNIDS))))
    spec = {"protocol": "phew", "datasets": ["tiny-imagenet"], "models": ["resnet18-tin"], "methods": ["phew"],
            "densities": [0.05], "seeds": [0], "recipe": "tin"}
    recipe = {"epochs": 1, "batch_size": 6, "lr": 0.01, "milestones": [], "precision": "fp32"}
    cfg = {"preset": "tin", "recipes": {"tin": recipe}, "presets": {"tin": {"studies": {"phew": spec}}}}
    (work / "tin.yaml").write_text(yaml.safe_dump(cfg))
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(hook), os.environ.get("PYTHONPATH")])),
           "SPARSENETS_TRACKING_URI": ""}
    snakemake(work, "--configfile", str(REPO / "config.yaml"), str(work / "tin.yaml"), "--cores", "2",
              f"{RUN}/metrics.json", configfile=False, env=env)
    register(monkeypatch, md5(archive))
    ds = data.load(work / "data" / "tiny-imagenet.npz")
    assert ds.classes == WNIDS and ds.x_train.shape == (12, 64, 64, 3) and len(ds.y_test) == 6
    metrics = json.loads((work / RUN / "metrics.json").read_text())
    assert metrics["spec"]["model"] == "resnet18-tin" and len(metrics["history"]) == 1
    assert metrics["history"][0]["test_images"] == 6 and 0 <= metrics["final_test_acc"] <= 1
    assert not metrics["diverged"]
    mask = (work / "results/phew/masks/tiny-imagenet/resnet18-tin/phew/d0.05/s0.pt")
    assert mask.exists() and (work / RUN / "model.pt").exists()
