"""Model registry: every network is built by name and initialised as PHEW's code does.

Kaiming-normal (fan_in) for convs and linears, BN gamma=1 beta=0, biases 0. A model class may declare
`linear_init_std` to draw its Linear weights from N(0, std) instead: VGG does (0.01), which is what
makes magnitude at init prune VGG's classifier away and changes SNIP and GraSP on VGG. A model may
declare `kaiming_mode = "fan_out"`: PHEW's Tiny-ImageNet nets (`resnet18-tin`, `vgg19-tin`,
`vgg19-nobn-tin`) do, which changes the layers' relative scales and so every global ranking at init.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from .. import catalogue
from .convnet import ConvNet
from .mlp import MLP
from .resnet import resnet18, resnet18_tin, resnet20
from .vgg import vgg19, vgg19_nobn, vgg19_nobn_tin, vgg19_tin

Builder = Callable[[int, tuple[int, int, int]], nn.Module]

MODELS: dict[str, Builder] = {
    "resnet18": lambda classes, shape: resnet18(classes, shape[0]),
    "resnet20": lambda classes, shape: resnet20(classes, shape[0]),
    "vgg19": lambda classes, shape: vgg19(classes, shape[0]),
    "vgg19-nobn": lambda classes, shape: vgg19_nobn(classes, shape[0]),
    "resnet18-tin": lambda classes, shape: resnet18_tin(classes, shape[0]),
    "vgg19-tin": lambda classes, shape: vgg19_tin(classes, shape[0]),
    "vgg19-nobn-tin": lambda classes, shape: vgg19_nobn_tin(classes, shape[0]),
    "mlp": lambda classes, shape: MLP(classes, shape),
    "convnet": lambda classes, shape: ConvNet(classes, shape),
}
catalogue.registered(MODELS, catalogue.MODELS, "model")  # what a model is: its catalogue entry


def build_model(name: str, num_classes: int, input_shape: tuple[int, int, int], seed: int | None = None) -> nn.Module:
    """Build model `name` for inputs of shape (C, H, W); `seed` makes the init reproducible."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(sorted(MODELS))}")
    if seed is None:
        model = MODELS[name](num_classes, tuple(input_shape))
        init_weights(model)
        return model
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = MODELS[name](num_classes, tuple(input_shape))
        init_weights(model)
    return model


def init_weights(model: nn.Module, generator: torch.Generator | None = None) -> None:
    """Kaiming-normal (the model's `kaiming_mode`, fan_in by default) for convs, and for linears unless
    the model declares `linear_init_std` (then N(0, std)); BN gamma=1 beta=0, biases 0."""
    linear_std = getattr(model, "linear_init_std", None)
    mode = getattr(model, "kaiming_mode", "fan_in")
    for m in model.modules():
        if isinstance(m, nn.Linear) and linear_std is not None:
            nn.init.normal_(m.weight, 0.0, linear_std, generator=generator)
        elif isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, mode=mode, nonlinearity="relu", generator=generator)
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
            nn.init.ones_(m.weight)
        if isinstance(m, (nn.Conv2d, nn.Linear, nn.BatchNorm2d, nn.BatchNorm1d)) and m.bias is not None:
            nn.init.zeros_(m.bias)


__all__ = ["MODELS", "build_model", "init_weights"]
