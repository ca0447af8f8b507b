import json

import pytest
import torch

from sparsenets.masks import Mask, keep_count, prunable
from sparsenets.models import build_model

# Prunable-weight counts on CIFAR-10 (as the papers count them): pinned so a model change cannot slip through.
PINNED = {"resnet18": 11_164_352, "vgg19": 20_024_000, "resnet20": 270_896, "vgg19-nobn": 20_024_000}


@pytest.mark.parametrize("name,count", PINNED.items())
def test_prunable_weight_counts(name, count):
    model = build_model(name, 10, (3, 32, 32))
    assert sum(w.numel() for w in prunable(model).values()) == count


def test_prunable_excludes_bias_and_batchnorm():
    names = prunable(build_model("resnet20", 10, (3, 32, 32)))
    assert all(n.endswith(".weight") for n in names)
    assert not any("bn" in n for n in names)
    assert "fc.weight" in names and "conv1.weight" in names


def test_init_is_seeded():
    a, b = (build_model("convnet", 10, (1, 8, 8), seed=3) for _ in range(2))
    c = build_model("convnet", 10, (1, 8, 8), seed=4)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not torch.equal(a.fc.weight, c.fc.weight)


@pytest.mark.parametrize("density", [0.013, 0.1, 0.5, 1.0])
def test_from_scores_keeps_exact_count(density):
    model = build_model("mlp", 10, (1, 8, 8), seed=0)
    scores = {k: w.abs() for k, w in prunable(model).items()}
    mask = Mask.from_scores(scores, density)
    assert mask.kept == keep_count(density, mask.total)
    kept_scores = torch.cat([scores[k][m] for k, m in mask.items()])
    dropped = torch.cat([scores[k][~m] for k, m in mask.items()])
    if len(dropped):
        assert kept_scores.min() >= dropped.max()


def test_from_scores_breaks_ties_deterministically():
    scores = {"a": torch.ones(10), "b": torch.ones(5)}
    m1, m2 = Mask.from_scores(scores, 0.4), Mask.from_scores(scores, 0.4)
    assert m1.kept == 6 and all(torch.equal(m1[k], m2[k]) for k in m1)


@pytest.mark.parametrize("density", [0.0, -0.1, 1.5])
def test_bad_density_is_refused(density):
    with pytest.raises(ValueError, match="density"):
        Mask.from_scores({"a": torch.ones(4)}, density)


def test_apply_zeroes_pruned_weights():
    model = build_model("mlp", 10, (1, 8, 8), seed=0)
    mask = Mask.from_scores({k: torch.rand(w.shape) for k, w in prunable(model).items()}, 0.2)
    mask.apply(model)
    for k, w in prunable(model).items():
        assert torch.all(w[~mask[k]] == 0) and torch.all(w[mask[k]] != 0)


def test_save_load_roundtrip_and_wrong_model(tmp_path):
    model = build_model("mlp", 10, (1, 8, 8), seed=0)
    mask = Mask.from_scores({k: torch.rand(w.shape) for k, w in prunable(model).items()}, 0.3)
    mask.meta["model"] = "mlp"
    mask.save(tmp_path / "m.pt")
    back = Mask.load(tmp_path / "m.pt", model)
    assert back.meta["model"] == "mlp" and all(torch.equal(back[k], mask[k]) for k in mask)
    other = build_model("convnet", 10, (1, 8, 8))
    with pytest.raises(ValueError, match="built for mlp"):
        Mask.load(tmp_path / "m.pt", other)
    (tmp_path / "bad.pt").write_bytes(b"not a mask")
    with pytest.raises(ValueError, match="bad.pt"):
        Mask.load(tmp_path / "bad.pt")
    assert not list(tmp_path.glob(".*tmp"))


def test_saving_the_same_mask_twice_gives_identical_bytes(tmp_path):
    """Two runs of one mask job write the same file (torch.save records the temporary file's name)."""
    model = build_model("mlp", 10, (1, 8, 8), seed=0)
    scores = {k: torch.rand(w.shape, generator=torch.Generator().manual_seed(0)) for k, w in prunable(model).items()}
    for run in ("a", "b"):
        Mask.from_scores(scores, 0.3).save(tmp_path / run / "m.pt")
    assert (tmp_path / "a" / "m.pt").read_bytes() == (tmp_path / "b" / "m.pt").read_bytes()


@pytest.mark.snakemake
def test_mask_rule_passes_first_layer_dense_under_that_layer_policy(tmp_path):
    """The tiny preset's Deconstructing study keeps the first layer dense; its PHEW study is global."""
    from conftest import snakemake

    import shlex

    from sparsenets import commands

    out = snakemake(tmp_path, "-n", "-p", "--config", "preset=tiny").stdout
    options = {}
    for line in out.splitlines():  # each mask job's command line, read back through its contract
        if " -m sparsenets mask " in line:
            mask, _ = commands.parse(shlex.split(line.split(" -m sparsenets ", 1)[1].split(" > ")[0]))
            options.setdefault((mask.out.split("/")[1], mask.method), set()).add(json.dumps(mask.options))
    assert options[("deconstructing", "random")] == {'{"first_layer_dense": true}'}
    assert options[("phew", "random")] == options[("phew", "random-erk")] == options[("phew", "magnitude")] == {"{}"}
