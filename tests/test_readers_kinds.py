"""A good file of another kind is not a damaged file: readers say what it is and what they expected, and advise
no deletion; a damaged file still gets the fix; a mistyped path gets the nearest existing name. Real files,
written by the real jobs' code (a tiny run on digits), through the real CLI where a user meets them."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from sparsenets.experiments import make_mask, run_training
from sparsenets.study import Run
from sparsenets.masks import Mask
from sparsenets.readers import DamagedFile, WrongKind, load_torch, nearest, read_json
from sparsenets.tables import RUN_KEYS, _read
from sparsenets.train import Recipe
from test_cli_errors import fails_cleanly, sparsenets


@pytest.fixture(scope="module")
def run(digits_npz, tmp_path_factory):
    """A finished tiny run's folder, laid out as the workflow lays it out: metrics.json, model.pt, mask.pt, ..."""
    root = tmp_path_factory.mktemp("readers") / "results/phew/runs/digits/mlp/random/d0.2/s0"
    make_mask("mlp", digits_npz, "random", 0.2, 0, root.parent / "mask-in.pt")
    run_training(Run("digits", "mlp", "random", 0.2, 0, study="phew"), Recipe(epochs=1, batch_size=64, augment=False),
                 data_file=digits_npz, mask_file=root.parent / "mask-in.pt", out_dir=root, device="cpu",
                 log=lambda m: None)
    return root


@pytest.mark.parametrize("name, found", [("model.pt", "a model's weights"), ("metrics.json", "a JSON file"),
                                         ("structure.json", "a JSON file")])
def test_structure_on_a_good_file_of_another_kind_says_what_it_is(run, name, found):
    """The issue's case: `structure model.pt` said "damaged ... delete it"."""
    err = fails_cleanly(sparsenets("structure", run / name), f"{run / name} is {found}", "not a mask file",
                        "expected a mask file", "'masks'", "The file itself is fine")
    assert "damaged" not in err and "delete" not in err


def test_structure_reads_the_runs_own_mask(run):
    proc = sparsenets("structure", run / "mask.pt")
    assert proc.returncode == 0 and "density" in proc.stdout.lower(), proc.stderr


def test_a_checkpoint_is_named_as_one(run, tmp_path):
    """A training checkpoint holds Python objects (its history): named, not called damaged."""
    path = tmp_path / "checkpoint.pt"
    torch.save({"key": "x", "epoch": 1, "model": {}, "history": [{"epoch": 1}], "data": Path("data/digits.npz")},
               path)
    with pytest.raises(WrongKind, match="holding Python objects.*checkpoint"):
        load_torch(path, "mask file")


def test_a_damaged_mask_still_gets_the_fix(run, tmp_path):
    broken = tmp_path / "results/phew/masks/digits/mlp/random/d0.2/s0.pt"  # where the mask rule writes it
    broken.parent.mkdir(parents=True)
    data = (run / "mask.pt").read_bytes()
    broken.write_bytes(data[: len(data) // 2])
    with pytest.raises(DamagedFile, match="is damaged.*written by rule mask: delete it"):
        Mask.load(broken)


def test_json_readers_tell_another_run_file_from_a_damaged_one(run, tmp_path):
    """A structure.json where a run's metrics are read: named; a metrics.json lacking a key: damaged; a torch
    file where JSON is read: named."""
    with pytest.raises(WrongKind, match=r"is a run's structure \(structure.json\), not a run file"):
        _read(run / "structure.json", RUN_KEYS)
    cut = tmp_path / "metrics.json"
    metrics = json.loads((run / "metrics.json").read_text())
    del metrics["final_test_acc"]
    cut.write_text(json.dumps(metrics))
    with pytest.raises(DamagedFile, match="no final_test_acc"):
        _read(cut, RUN_KEYS)
    with pytest.raises(WrongKind, match="is a torch file, not a run metrics"):
        read_json(run / "model.pt", "run metrics", ("spec",))


def test_a_mistyped_path_gets_the_nearest_name(run, tmp_path):
    typo = run.parent / "so" / "mask.pt"  # s0 typed as so
    assert nearest(typo) == str(run / "mask.pt")
    fails_cleanly(sparsenets("structure", typo), f"mask file {typo} does not exist", f"did you mean {run / 'mask.pt'}?")
    other = tmp_path / "elsewhere"
    shutil.copytree(run, other)
    assert nearest(other / "maks.pt") == str(other / "mask.pt")
    assert nearest(other / "zzzzzz.pt") is None  # nothing close: no guess
