"""Bad input through the real CLI (`python -m sparsenets ...` and `snakemake --config`): one clear message
naming the key, file or value and the fix, a non-zero exit, and no traceback unless asked for (--debug,
SPARSENETS_DEBUG=1). A damaged file another job wrote names itself and the rule that writes it."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from conftest import PY, REPO, snakemake
from sparsenets import cli
from sparsenets.experiments import make_mask, run_training
from sparsenets.masks import check_density
from sparsenets.study import Run
from sparsenets.train import Recipe


def sparsenets(*args: str, cwd: Path = REPO, env: dict | None = None) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k != "SPARSENETS_DEBUG"}
    return subprocess.run([PY, "-m", "sparsenets", *map(str, args)], capture_output=True, text=True, timeout=600,
                          stdin=subprocess.DEVNULL, cwd=cwd, env={**environ, **(env or {})})


def fails_cleanly(proc: subprocess.CompletedProcess, *named: str) -> str:
    """The one error message of a failed command, after checking it names everything in `named`."""
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, proc.stderr
    for text in named:
        assert text in errors[0], errors[0]
    return errors[0]


def mask_args(data_file: Path, out: Path, method: str = "random", density: str = "0.2") -> list:
    return ["mask", "--dataset", "digits", "--data", data_file, "--model", "mlp", "--method", method,
            "--density", density, "--seed", "0", "--device", "cpu", "--out", out]


# ------------------------------------------------------------------------------- mistakes on the CLI
def test_unknown_method_is_named_with_the_known_ones(digits_npz, tmp_path):
    fails_cleanly(sparsenets(*mask_args(digits_npz, tmp_path / "m.pt", method="phwe")),
                  "unknown pruning method 'phwe'", "known methods:", "phew")
    assert not (tmp_path / "m.pt").exists()


@pytest.mark.parametrize("density", ["0", "1.5"])
def test_density_outside_zero_one_is_named(digits_npz, tmp_path, density):
    fails_cleanly(sparsenets(*mask_args(digits_npz, tmp_path / "m.pt", density=density)),
                  "density must be in (0, 1]", f"got {float(density)}")


def test_missing_dataset_names_the_data_command(tmp_path):
    data_file = tmp_path / "digits.npz"
    message = fails_cleanly(sparsenets(*mask_args(data_file, tmp_path / "m.pt")),
                            f"dataset file {data_file} does not exist",
                            f"python -m sparsenets data --dataset digits --out {data_file}")
    assert "prepare" not in message


def test_channel_first_cifar_file_is_named_with_the_transpose_that_fixes_it(tmp_path):
    """Before, an N×3×32×32 CIFAR file was taken for 3×32 images with 32 channels."""
    import numpy as np

    path = tmp_path / "cifar10.npz"
    np.savez(path, x_train=np.zeros((20, 3, 32, 32), np.uint8), y_train=np.arange(20) % 10,
             x_test=np.zeros((10, 3, 32, 32), np.uint8), y_test=np.arange(10), classes=np.array(list("abcdefghij")))
    proc = sparsenets("mask", "--dataset", "cifar10", "--data", path, "--model", "convnet", "--method", "random",
                      "--density", "0.2", "--seed", "0", "--device", "cpu", "--out", tmp_path / "m.pt")
    fails_cleanly(proc, f"dataset file {path}: x_train has shape (20, 3, 32, 32): channel-first",
                  "np.transpose(x, (0, 2, 3, 1))")


def test_missing_mask_file_is_named(tmp_path):
    fails_cleanly(sparsenets("structure", tmp_path / "nope.pt"), f"mask file {tmp_path / 'nope.pt'} does not exist")


@pytest.mark.parametrize("content", ["npz", "tensor", "text"])
def test_foreign_file_given_as_a_mask_is_named(digits_npz, tmp_path, content):
    path = tmp_path / "foreign.pt"
    if content == "npz":
        shutil.copy(digits_npz, path)
    elif content == "tensor":
        torch.save({"weights": torch.zeros(3)}, path)
    else:
        path.write_text("not a torch file")
    fails_cleanly(sparsenets("structure", path), f"mask file {path} is damaged or not what it should be")


def test_unknown_figure_is_named_with_the_known_ones(tmp_path):
    fails_cleanly(sparsenets("figure", "acuracy", "--tables", tmp_path / "runs.csv", "--out", tmp_path / "f.png"),
                  "unknown figure 'acuracy'", "accuracy_vs_density")


def test_plan_of_an_unknown_preset_names_it_and_the_presets():
    fails_cleanly(sparsenets("plan", "--preset", "quik"), "'quik' is not a preset", "quick")


def test_plan_outside_the_repository_says_where_to_run_it(tmp_path):
    fails_cleanly(sparsenets("plan", cwd=tmp_path), "config file config.yaml not found", str(tmp_path),
                  "--configfile")


def test_bad_recipe_key_is_named(digits_npz, tmp_path):
    make_mask("mlp", digits_npz, "random", 0.2, 0, tmp_path / "mask.pt")
    proc = sparsenets("train", "--study", "phew", "--dataset", "digits", "--data", digits_npz, "--model", "mlp",
                      "--method", "random", "--density", "0.2", "--seed", "0", "--device", "cpu",
                      "--mask", tmp_path / "mask.pt", "--recipe", '{"epochs": 1, "epoch": 2}',
                      "--out-dir", tmp_path / "run")
    fails_cleanly(proc, "unknown recipe key(s): epoch")


@pytest.mark.parametrize("how", ["--debug", "SPARSENETS_DEBUG=1"])
def test_the_traceback_of_an_expected_error_shows_only_when_asked(digits_npz, tmp_path, how):
    args = mask_args(digits_npz, tmp_path / "m.pt", method="phwe")
    proc = sparsenets(*(args + ["--debug"] if how == "--debug" else args),
                      env={"SPARSENETS_DEBUG": "1"} if how != "--debug" else None)
    assert proc.returncode == 1 and "Traceback" in proc.stderr and "error: unknown pruning method 'phwe'" in proc.stderr


def test_only_errors_the_package_raises_on_purpose_hide_their_traceback():
    """A `raise` in sparsenets is an expected mistake; the same exception type from a library or from a
    bug in our code (no `raise` of ours) is unexpected, and its traceback stays."""
    def caught(fn) -> BaseException:
        try:
            fn()
        except BaseException as e:  # noqa: BLE001
            return e
        raise AssertionError("no exception")

    assert cli.expected(caught(lambda: check_density(0)))
    assert not cli.expected(caught(lambda: torch.zeros(2) @ torch.zeros(3)))  # RuntimeError inside torch
    assert not cli.expected(caught(lambda: int("x")))  # ValueError, but not raised by the package
    assert not cli.expected(caught(lambda: {}["k"]))  # KeyError: a bug, never an expected mistake


@pytest.mark.snakemake
@pytest.mark.parametrize("override, named", [
    ("preset=quik", "config key 'preset': 'quik' is not a preset; choose one of paper, quick, tiny"),
    ("methods=[phew]", "config key 'methods' is not a known key; allowed keys: "),
    ("device=gpu", "config key 'device': 'gpu' does not match the allowed pattern ^(auto|cpu|cuda(:[0-9]+)?|mps)$"),
    ("presets={'quick': {'studies': {'phew': {'methods': 'phew'}}}}",
     "config key 'presets.quick.studies.phew.methods': 'phew' is a str, not array"),
    ("presets={'quick': {'studies': {'phew': {'densities': [1.5]}}}}",
     "config key 'presets.quick.studies.phew.densities.0': '1.5' is a str, not number (a value inside a --config "
     "dict arrives as a string"),
])
def test_bad_config_override_prints_the_key_value_and_allowed_values_only(tmp_path, override, named):
    proc = snakemake(tmp_path, "-n", "--config", override, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and named in out, out[-3000:]
    assert len(out.splitlines()) < 10 and "Failed validating" not in out, out[-3000:]


# --------------------------------------------------------------- damaged files another job wrote
@pytest.fixture(scope="module")
def finished_run(digits_npz, tmp_path_factory) -> Path:
    """A real finished run (and its mask) where the workflow puts them, under a results/ tree."""
    root = tmp_path_factory.mktemp("work")
    mask = root / "results/deconstructing/masks/digits/mlp/random/d0.2/s0.pt"
    make_mask("mlp", digits_npz, "random", 0.2, 0, mask, device="cpu")
    run = root / "results/deconstructing/runs/digits/mlp/random/d0.2/s0"
    run_training(Run("digits", "mlp", "random", "0.2", 0, study="deconstructing"),
                 Recipe(epochs=1, batch_size=64, augment=False), data_file=digits_npz, mask_file=mask, out_dir=run,
                 device="cpu", log=lambda m: None)
    return root


@pytest.fixture
def work(finished_run, tmp_path) -> Path:
    """A copy of the finished run's tree, for a test to damage; commands run in it (relative paths, as jobs do)."""
    shutil.copytree(finished_run / "results", tmp_path / "results")
    return tmp_path


RUN_DIR = "results/deconstructing/runs/digits/mlp/random/d0.2/s0"
FIX = "delete it and run snakemake again, which reruns that job"


def cut(path: Path, keep: int = 1000) -> None:
    path.write_bytes(path.read_bytes()[:keep])


def test_damaged_model_fails_the_imp_mask_job_naming_it_and_its_rule(work):
    cut(work / RUN_DIR / "model.pt")
    fails_cleanly(sparsenets("imp-mask", "--run-dir", RUN_DIR, "--rate", "0.2", "--out", "next.pt", cwd=work),
                  f"trained weights {RUN_DIR}/model.pt is damaged", "written by rule train", FIX)
    assert not (work / "next.pt").exists()


def test_damaged_run_mask_fails_the_sensitivity_job_naming_it_and_its_rule(work, digits_npz):
    cut(work / RUN_DIR / "mask.pt")
    proc = sparsenets("sensitivity", "--run-dir", RUN_DIR, "--data", digits_npz, "--fractions", "0.5",
                      "--device", "cpu", "--out", "curve.json", cwd=work)
    fails_cleanly(proc, f"mask file {RUN_DIR}/mask.pt is damaged", "written by rule train", FIX)
    assert not (work / "curve.json").exists()


def test_damaged_mask_fails_the_training_job_naming_it_and_its_rule(work, digits_npz):
    mask = "results/deconstructing/masks/digits/mlp/random/d0.2/s0.pt"
    cut(work / mask, 300)
    proc = sparsenets("train", "--study", "deconstructing", "--dataset", "digits", "--data", digits_npz,
                      "--model", "mlp", "--method", "random", "--density", "0.2", "--seed", "0", "--device", "cpu",
                      "--mask", mask, "--recipe", '{"epochs": 1}', "--out-dir", "run", cwd=work)
    fails_cleanly(proc, f"mask file {mask} is damaged", "written by rule mask", FIX)


@pytest.mark.parametrize("damage", ["cut", "no spec"])
def test_damaged_metrics_fail_the_table_job_naming_them_and_their_rule(work, damage):
    metrics = work / RUN_DIR / "metrics.json"
    if damage == "cut":
        cut(metrics, 100)
    else:
        metrics.write_text(json.dumps({"history": []}))
    proc = sparsenets("table", "--kind", "runs", "--out", "runs.csv", f"{RUN_DIR}/metrics.json", cwd=work)
    fails_cleanly(proc, f"run file {RUN_DIR}/metrics.json is damaged", "written by rule train", FIX)
    assert not (work / "runs.csv").exists()


def test_damaged_curve_fails_the_table_job_naming_it_and_its_rule(work):
    curve = work / "results/deconstructing/sensitivity/digits/mlp/random/d0.2/s0/curve.json"
    curve.parent.mkdir(parents=True)
    curve.write_text('{"spec": {"dataset": "dig')
    proc = sparsenets("table", "--kind", "sensitivity", "--out", "s.csv", curve.relative_to(work), cwd=work)
    fails_cleanly(proc, f"run file {curve.relative_to(work)} is damaged", "written by rule sensitivity", FIX)


def test_the_rule_named_for_each_results_file_is_the_workflows_rule_that_writes_it():
    """The rule a damaged file's message names, checked against the rules the workflow defines."""
    import re

    from sparsenets.readers import producer

    rules = set(re.findall(r"^(?:rule (\w+):|use rule \w+ as (\w+))", "\n".join(
        p.read_text() for p in (REPO / "workflow/rules").glob("*.smk")), re.M))
    rules = {a or b for a, b in rules}
    cases = {
        "results/d/masks/cifar10/convnet/random/d0.1/s0.pt": "mask",
        "results/d/masks/cifar10/convnet/imp/d0.25/s0.pt": "imp_mask",
        "results/d/masks/cifar10/convnet/random-like-imp/d0.25/s0.pt": "mask_layer_matched",
        "results/d/runs/cifar10/convnet/dnw/d0.25/s0/model.pt": "train",
        "results/d/runs/cifar10/convnet/imp/d0.25/reinit/s0/metrics.json": "train_reinit",
        "results/d/runs/cifar10/convnet/random/d1/s0/model.pt": "train_dense",
        "results/d/runs/cifar10/convnet/random/d1/s0/rewind.pt": "train_dense",
        "results/p/runs/cifar10/resnet20/mag/d0.1/prune/s0/model.pt": "train_prune",
        "results/d/sensitivity/cifar10/convnet/imp/d0.25/s0/curve.json": "sensitivity",
        "results/d/tables/runs.csv": "table",
    }
    assert {path: producer(path) for path in cases} == cases
    assert set(cases.values()) <= rules, set(cases.values()) - rules
    assert producer("/home/me/foreign.pt") is None
