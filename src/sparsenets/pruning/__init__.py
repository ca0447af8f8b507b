"""Pruning at initialisation: every method builds a Mask from a freshly initialised model.

One signature for all: `build(model, density, inputs) -> Mask`. Methods register themselves by the name of
their entry in `sparsenets.catalogue`, which holds what the method is (needs data, nested, fresh weights) and
names its module here; `build_mask` is the only entry point the rest of the package uses.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import Tensor, nn

from .. import catalogue
from ..masks import Mask, check_density


@dataclass
class PruneInputs:
    """What a method may use besides the model and the density."""

    generator: torch.Generator  # the mask seed's stream: every random choice draws from it
    num_classes: int
    input_shape: tuple[int, int, int]
    # n -> (x, y): n training images (normalised, on the model's device) drawn with `generator`
    batches: Callable[[int], tuple[Tensor, Tensor]] | None = None
    options: dict[str, Any] = field(default_factory=dict)  # method knobs from config
    start: Mask | None = None  # a nested method's next sparser mask, which it grows from (phew-res)


Builder = Callable[[nn.Module, float, PruneInputs], Mask]


@dataclass(frozen=True)
class Method:
    name: str
    build: Builder
    needs_data: bool = False  # reads training images (snip, grasp)
    fresh_weights: bool = False  # train from a new init, not the one the mask was built on
    nested: bool = False  # grows from its next sparser mask (PruneInputs.start): a chain of densities


METHODS: dict[str, Method] = {}


def register(name: str) -> Callable[[Builder], Builder]:
    """Register `name`'s builder; what the method is comes from its catalogue entry (a pruning method's)."""
    entry = catalogue.entry(catalogue.METHODS, name, "pruning method")
    if entry.kind != "pruning":
        raise ValueError(f"pruning method {name!r}: its catalogue entry is of kind {entry.kind!r}, not 'pruning'")

    def deco(fn: Builder) -> Builder:
        METHODS[name] = Method(name, fn, entry.needs_data, entry.fresh_weights, entry.nested)
        return fn

    return deco


def load_all() -> None:
    """Import the module of every pruning method in the catalogue: each registers its builders."""
    for module in dict.fromkeys(catalogue.METHODS[n].module for n in catalogue.of_kind("pruning")):
        importlib.import_module(f"{__name__}.{module}")


def get_method(name: str) -> Method:
    load_all()
    if name not in METHODS:
        raise ValueError(f"unknown pruning method {name!r}; known methods: {', '.join(sorted(METHODS))}")
    return METHODS[name]


def build_mask(method: str, model: nn.Module, density: float, inputs: PruneInputs) -> Mask:
    """Build `method`'s mask for `model` at global `density`; the model's weights are left unchanged."""
    check_density(density)
    m = get_method(method)
    if m.needs_data and inputs.batches is None:
        raise ValueError(f"pruning method {method!r} needs training data, but none was given")
    if inputs.start is not None and not m.nested:
        raise ValueError(f"pruning method {method!r} builds every density on its own; it cannot grow from a "
                         "sparser mask (only nested methods, such as phew-res, do)")
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    was_training = model.training
    try:
        mask = m.build(model, float(density), inputs)
    finally:
        model.load_state_dict(state)
        model.train(was_training)
    mask.meta.update(method=method, density=float(density), fresh_weights=m.fresh_weights)
    return mask


__all__ = ["METHODS", "Method", "PruneInputs", "build_mask", "get_method", "register"]
