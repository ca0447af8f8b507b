"""The catalogue of names (sparsenets.catalogue) and the registries agree both ways: every entry has its
implementation and every implementation its entry; the worked example of docs/ADDING_A_METHOD.md, added exactly
as written there, is a method the grid, the config check and the mask builder accept."""
from __future__ import annotations

import copy
import importlib.util
import re
import subprocess
import sys

import pytest
import torch
import yaml

from conftest import REPO
from sparsenets import catalogue, data, models, pruning, study, topology

CONFIG = yaml.safe_load((REPO / "config.yaml").read_text())
GUIDE = REPO / "docs" / "ADDING_A_METHOD.md"


# ------------------------------------------------------------------------------------- both ways
def test_every_pruning_method_has_its_builder_and_every_builder_its_entry():
    pruning.load_all()
    assert sorted(pruning.METHODS) == sorted(catalogue.of_kind("pruning"))


def test_the_builders_facts_are_the_catalogues():
    pruning.load_all()
    for name, m in pruning.METHODS.items():
        entry = catalogue.METHODS[name]
        assert (m.needs_data, m.nested, m.fresh_weights) == (entry.needs_data, entry.nested, entry.fresh_weights)
    assert {n for n, m in pruning.METHODS.items() if m.needs_data} == {"snip", "grasp"}


def test_every_topology_has_its_class_and_every_class_its_entry():
    topology.load_all()
    ours = {n for n, cls in topology.TOPOLOGIES.items() if cls.__module__.startswith("sparsenets.topology.")}
    assert sorted(ours) == sorted(catalogue.of_kind("topology", "phase"))  # a benchmark may add its own elsewhere
    assert topology.methods() == sorted(catalogue.of_kind("topology")) == sorted(study.TOPOLOGIES)
    assert catalogue.GRADUAL in topology.TOPOLOGIES and catalogue.GRADUAL not in topology.methods()


def test_every_model_and_dataset_has_its_builder_and_every_builder_its_entry():
    assert sorted(models.MODELS) == sorted(catalogue.MODELS)
    assert sorted(data.DATASETS) == sorted(catalogue.DATASETS)


@pytest.mark.parametrize("name", ["digits", "synthetic"])
def test_a_datasets_entry_is_what_its_file_holds(name, tmp_path):
    ds = data.load(data.prepare(name, tmp_path / f"{name}.npz"))
    entry = catalogue.DATASETS[name]
    assert (entry.train, entry.test, entry.shape, entry.classes) == (
        len(ds.y_train), len(ds.y_test), tuple(ds.input_shape), ds.num_classes)


def test_a_builder_without_an_entry_fails_at_registration_naming_the_catalogue():
    with pytest.raises(ValueError, match=r"pruning method 'nameless' has no entry in sparsenets\.catalogue"):
        pruning.register("nameless")
    with pytest.raises(ValueError, match="its catalogue entry is of kind 'topology', not 'pruning'"):
        pruning.register("dnw")
    with pytest.raises(ValueError, match=r"topology 'snip': its catalogue entry is of kind 'pruning'"):
        topology.register("snip")


def test_names_are_the_registries():
    """What `python -m sparsenets names` printed from the registries (torch imported) is the catalogue's."""
    pruning.load_all()
    assert catalogue.names() == {"models": sorted(models.MODELS), "methods": sorted(pruning.METHODS),
                                 "datasets": sorted(data.DATASETS), "topologies": topology.methods()}


def test_what_a_method_is():
    kinds = {m: catalogue.method(m).kind for m in ("snip", "dnw", "imp", "mag", "random-like-imp",
                                                     "random-like-snip", "dnw-freeze3", catalogue.GRADUAL)}
    assert kinds == {"snip": "pruning", "dnw": "topology", "imp": "imp", "mag": "mag",
                     "random-like-imp": "layer-matched", "random-like-snip": "layer-matched",
                     "dnw-freeze3": "frozen-dnw", catalogue.GRADUAL: "phase"}
    assert catalogue.method("no-such-method") is None
    assert study.NESTED == ("phew-res",) and study.FIRST_LAYER_DENSE == ("random", "random-erk")
    assert catalogue.label("magnitude") == "magnitude at init" and catalogue.label("snip") == "snip"


def test_the_catalogue_and_the_grid_import_no_torch():
    code = "import sparsenets.catalogue, sparsenets.study, sparsenets.styles, sparsenets.labels"
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True, check=True)
    modules = {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in out.stderr.splitlines() if "|" in line}
    assert not modules & {"torch", "numpy", "pandas", "matplotlib", "snakemake"}


def test_check_names_and_expand_default_to_the_catalogue():
    study.check_names(CONFIG)  # the registries' names, without importing them
    assert [j.name for j in study.expand(CONFIG, "tiny")] == [
        j.name for j in study.expand(CONFIG, "tiny", topologies=catalogue.of_kind("topology"))]


# --------------------------------------------------------------------------- the worked example
def guide_blocks() -> tuple[str, str]:
    """The example module and its catalogue entry, exactly as docs/ADDING_A_METHOD.md shows them."""
    blocks = re.findall(r"```python\n(.*?)```", GUIDE.read_text(), re.S)
    module = next(b for b in blocks if "@register(" in b)
    entry = next(b for b in blocks if b.lstrip().startswith("_m("))
    return module, entry


@pytest.fixture
def example(monkeypatch, tmp_path):
    """The guide's method added the documented way, in throwaway copies of the catalogue and the registry: its
    entry evaluated in the catalogue's namespace, its module loaded as a module of sparsenets.pruning."""
    module_code, entry_code = guide_blocks()
    entry = eval(entry_code.strip().rstrip(","), vars(catalogue))  # noqa: S307 - the guide's own line
    monkeypatch.setattr(catalogue, "METHODS", {**catalogue.METHODS, entry.name: entry})
    monkeypatch.setattr(pruning, "METHODS", dict(pruning.METHODS))
    path = tmp_path / f"{entry.module}.py"
    path.write_text(module_code)
    name = f"sparsenets.pruning.{entry.module}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)
    spec.loader.exec_module(module)
    return entry


def test_the_worked_example_is_one_module_and_one_entry(example):
    assert example.name == "magnitude-scaled" and example.kind == "pruning"
    pruning.load_all()  # imports the catalogue's modules: the example's among them
    assert example.name in pruning.METHODS and example.name in catalogue.names()["methods"]
    model = models.build_model("mlp", 10, (1, 8, 8), seed=0)
    inputs = pruning.PruneInputs(generator=torch.Generator().manual_seed(0), num_classes=10, input_shape=(1, 8, 8))
    mask = pruning.build_mask(example.name, model, 0.1, inputs)
    assert mask.meta["method"] == example.name and abs(mask.density - 0.1) < 1e-3


def test_a_study_lists_the_worked_example_and_the_grid_trains_it(example):
    config = copy.deepcopy(CONFIG)
    phew = config["presets"]["tiny"]["studies"]["phew"]
    phew["methods"] = [*phew["methods"], example.name]
    study.check_names(config, preset="tiny")
    jobs = {j.name: j for j in study.expand(config, "tiny")}
    run = study.Run("digits", "mlp", example.name, study.format_density(phew["densities"][0]), phew["seeds"][0])
    mask, train = jobs[f"mask phew/{run.name}"], jobs[f"train phew/{run.name}"]
    assert train.inputs["mask"] == mask.output and train.params["topology"] == "static"
    config["presets"]["tiny"]["studies"]["phew"]["methods"].append("magnitude-scald")
    with pytest.raises(ValueError, match="unknown method 'magnitude-scald'"):
        study.check_names(config, preset="tiny")
