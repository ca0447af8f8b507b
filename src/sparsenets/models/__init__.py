"""Model registry: every network is built by name and initialised as PHEW's code does.

Kaiming-normal (fan_in) for convs and linears, BN gamma=1 beta=0, biases 0. A model class may declare
`linear_init_std` to draw its Linear weights from N(0, std) instead: VGG does (0.01), which is what
makes magnitude at init prune VGG's classifier away and changes SNIP and GraSP on VGG.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from .convnet import ConvNet
from .mlp import MLP
from .resnet import resnet18, resnet20
from .vgg import vgg19, vgg19_nobn

Builder = Callable[[int, tuple[int, int, int]], nn.Module]

MODELS: dict[str, Builder] = {
    "resnet18": lambda classes, shape: resnet18(classes, shape[0]),
    "resnet20": lambda classes, shape: resnet20(classes, shape[0]),
    "vgg19": lambda classes, shape: vgg19(classes, shape[0]),
    "vgg19-nobn": lambda classes, shape: vgg19_nobn(classes, shape[0]),
    "mlp": lambda classes, shape: MLP(classes, shape),
    "convnet": lambda classes, shape: ConvNet(classes, shape),
}


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
    """Kaiming-normal (fan_in) for convs, and for linears unless the model declares `linear_init_std`
    (then N(0, std)); BN gamma=1 beta=0, biases 0."""
    linear_std = getattr(model, "linear_init_std", None)
    for m in model.modules():
        if isinstance(m, nn.Linear) and linear_std is not None:
            nn.init.normal_(m.weight, 0.0, linear_std, generator=generator)
        elif isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu", generator=generator)
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
            nn.init.ones_(m.weight)
        if isinstance(m, (nn.Conv2d, nn.Linear, nn.BatchNorm2d, nn.BatchNorm1d)) and m.bias is not None:
            nn.init.zeros_(m.bias)


__all__ = ["MODELS", "build_model", "init_weights"]
