"""Initialisation as PHEW's code does it: Kaiming-normal (fan_in) convs, VGG's linear layer N(0, 0.01)."""
from __future__ import annotations

import math

import pytest
from torch import nn

from sparsenets.models import build_model


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

