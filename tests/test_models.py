"""Initialisation as PHEW's code does it: Kaiming-normal (fan_in) convs, VGG's linear layer N(0, 0.01); PHEW's
Tiny-ImageNet nets (fan_out), their weight counts and their masks."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from sparsenets.graph import unit_graph
from sparsenets.masks import keep_count, prunable
from sparsenets.models import build_model
from sparsenets.pruning import PruneInputs, build_mask
from sparsenets.train import seeded_generator


def convs(model: nn.Module) -> list[nn.Conv2d]:
    return [m for m in model.modules() if isinstance(m, nn.Conv2d)]


@pytest.mark.parametrize("name", ["vgg19", "vgg19-nobn"])
def test_vgg_linear_is_normal_001_and_convs_kaiming_fan_in(name: str) -> None:
    model = build_model(name, 100, (3, 32, 32), seed=0)
    fc = model.fc.weight.detach()  # 100 x 512: 51,200 draws
    assert float(fc.std()) == pytest.approx(0.01, rel=0.02) and abs(float(fc.mean())) < 0.01 * 0.02
    for conv in convs(model)[::5]:
        fan_in = conv.weight[0].numel()
        assert float(conv.weight.detach().std()) == pytest.approx(math.sqrt(2 / fan_in), rel=0.05), conv
        assert conv.bias is None or not conv.bias.any()
    assert not model.fc.bias.any()
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(bool(m.weight.eq(1).all() and m.bias.eq(0).all()) for m in norms)
    assert len(norms) == (16 if name == "vgg19" else 0)


@pytest.mark.parametrize("name", ["resnet18", "resnet20", "convnet", "mlp"])
def test_other_linears_stay_kaiming_fan_in(name: str) -> None:
    model = build_model(name, 100, (3, 32, 32), seed=0)
    fc = model.fc.weight.detach()
    assert float(fc.std()) == pytest.approx(math.sqrt(2 / fc.shape[1]), rel=0.05)



# ------------------------------------------------------------------ PHEW's Tiny-ImageNet networks
# Prunable weights (conv and linear weights; no biases, no BN) for 3x64x64 inputs and 200 classes:
#   ResNet-18: stem 3*64*9 = 1,728; stage 1: 4 * 64*64*9 = 147,456; stage 2: 64*128*9 + 3 * 128*128*9
#   + 64*128 (shortcut) = 524,288; stage 3: 128*256*9 + 3 * 256*256*9 + 128*256 = 2,097,152; stage 4:
#   256*512*9 + 3 * 512*512*9 + 256*512 = 8,388,608; fc 512*200 = 102,400. Sum 11,261,632 (on CIFAR-10
#   the fc is 5,120 and the sum the 11,164,352 of test_masks.py).
#   VGG-19's 16 convs: 1,728 + 36,864 + 73,728 + 147,456 + 294,912 + 3 * 589,824 + 1,179,648
#   + 3 * 2,359,296 + 4 * 2,359,296 = 20,018,880; MLP head 2048*1024 + 1024*1024 + 1024*200 = 3,350,528.
#   Sum 23,369,408.
TIN_PINNED = {"resnet18-tin": 11_261_632, "vgg19-tin": 23_369_408, "vgg19-nobn-tin": 23_369_408}
TIN = (3, 64, 64)


@pytest.mark.parametrize("name,count", TIN_PINNED.items())
def test_tiny_imagenet_nets_take_64x64_and_have_the_pinned_weight_counts(name, count):
    model = build_model(name, 200, TIN, seed=0)
    assert sum(w.numel() for w in prunable(model).values()) == count
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(2, *TIN)).shape == (2, 200)


def test_resnet18_pools_an_8x8_map_on_64x64_images():
    """The global average pool, not a fixed 4x4 window: on 64x64 inputs the last stage's map is 8x8."""
    model = build_model("resnet18-tin", 200, TIN, seed=0).eval()
    seen = {}
    model.layers[-1].register_forward_hook(lambda m, i, out: seen.update(shape=tuple(out.shape)))
    with torch.no_grad():
        model(torch.randn(1, *TIN))
    assert seen["shape"] == (1, 512, 8, 8)


def test_vgg19_tin_head_reads_512x2x2_features_through_1024_1024_with_dropout():
    model = build_model("vgg19-nobn-tin", 200, TIN, seed=0)
    linears = [m for m in model.classifier if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(2048, 1024), (1024, 1024), (1024, 200)]
    assert sum(isinstance(m, nn.Dropout) and m.p == 0.5 for m in model.classifier) == 2
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert sum(isinstance(m, nn.BatchNorm2d) for m in build_model("vgg19-tin", 200, TIN).modules()) == 16


@pytest.mark.parametrize("name", ["resnet18-tin", "vgg19-tin", "vgg19-nobn-tin"])
def test_tiny_imagenet_nets_are_kaiming_fan_out(name):
    """PHEW's Tiny-ImageNet init: std sqrt(2 / fan_out) for convs (fan_in for the CIFAR nets); VGG's
    linears N(0, 0.01), ResNet's fc Kaiming fan_out too."""
    model = build_model(name, 200, TIN, seed=0)
    assert model.kaiming_mode == "fan_out"
    for conv in convs(model)[1::4]:
        fan_out = conv.weight.shape[0] * conv.weight[0, 0].numel()
        assert float(conv.weight.detach().std()) == pytest.approx(math.sqrt(2 / fan_out), rel=0.05), conv
    if name.startswith("vgg"):
        for fc in (m for m in model.classifier if isinstance(m, nn.Linear)):
            assert float(fc.weight.detach().std()) == pytest.approx(0.01, rel=0.05) and not fc.bias.any()
    else:
        assert float(model.fc.weight.detach().std()) == pytest.approx(math.sqrt(2 / 200), rel=0.05)
    assert build_model("resnet18", 200, TIN, seed=0).kaiming_mode == "fan_in"  # the CIFAR net is unchanged


@pytest.mark.parametrize("method", ["phew", "synflow"])
def test_phew_and_synflow_masks_on_vgg19_tin_are_exact_and_connected(method):
    """The walks (and SynFlow's flow) cross the conv -> linear flatten: each of the 512 channels feeds its
    2x2 = 4 inputs of the first linear. Small images keep the test fast: the head is the same."""
    shape = (3, 32, 32)
    model = build_model("vgg19-nobn-tin", 200, shape, seed=0)
    graph = unit_graph(model, shape)
    [flatten] = [e for e in graph.edges if e.dst == "classifier.0.weight"]
    assert (flatten.src, flatten.spread) == ("features.34.weight", 4)
    options = {"iterations": 10} if method == "synflow" else {}
    mask = build_mask(method, model, 0.01, PruneInputs(seeded_generator(0), 200, shape, options=options))
    budget = keep_count(0.01, mask.total)
    assert budget <= mask.kept < budget + len(mask)  # PHEW stops after the walk that reaches the budget
    if method == "synflow":
        assert mask.kept == budget
    # connected: every layer keeps weights, and the kept classifier inputs come from kept channels of the
    # last conv (input k of the first linear is channel k // 4). PHEW keeps whole paths, so all do; SynFlow
    # (measured: 98 %) may keep a few zero-flow weights when scores tie; a head read position-major
    # (channel k % 512) would match only about a third (169 of 512 channels are kept)
    assert all(m.any() for m in mask.values())
    channels_out = mask["features.34.weight"].flatten(1).any(1)
    inputs_used = mask["classifier.0.weight"].any(0).nonzero().flatten()
    fed = channels_out[inputs_used // 4].float().mean()
    if method == "phew":
        assert float(fed) == 1.0
        assert bool(mask["classifier.6.weight"].any(1).all())  # backward walks start from all 200 classes
    else:
        assert float(fed) > 0.9 > float(channels_out[inputs_used % 512].float().mean())
