"""Random masks: uniform per layer, and Erdős–Rényi-Kernel (ERK) layer densities.

Option `first_layer_dense` (random and random-erk): keep the first prunable tensor (the first conv)
dense and spread the rest of the global budget over the other layers, uniformly or by ERK, so the
total kept count is still keep_count(density, total). This is RigL's code's uniform distribution,
the Deconstructing study's layer policy (README, "Layer policy"); without it the budget is global.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from ..masks import Mask, keep_count, prunable
from . import PruneInputs, register

Shapes = dict[str, torch.Size]
Spread = Callable[[Shapes, float], dict[str, float]]


def uniform_densities(model: nn.Module, density: float) -> dict[str, float]:
    return uniform_spread({k: w.shape for k, w in prunable(model).items()}, density)


def erk_densities(model: nn.Module, density: float) -> dict[str, float]:
    """Layer density proportional to (sum of dims)/(product of dims), scaled to the global budget;
    layers that would exceed 1 are made dense and the rest rescaled (RigL's ERK)."""
    return erk_spread({k: w.shape for k, w in prunable(model).items()}, density)


def uniform_spread(shapes: Shapes, density: float) -> dict[str, float]:
    """Every layer of `shapes` at `density`."""
    return {k: density for k in shapes}


def erk_spread(shapes: Shapes, density: float) -> dict[str, float]:
    """ERK densities for the layers of `shapes`, on the budget `density` of their total."""
    sizes = {k: math.prod(s) for k, s in shapes.items()}
    raw = {k: sum(s) / sizes[k] for k, s in shapes.items()}
    budget = density * sum(sizes.values())
    dense: set[str] = set()
    while len(dense) < len(shapes):
        free = [k for k in shapes if k not in dense]
        scale = (budget - sum(sizes[k] for k in dense)) / sum(raw[k] * sizes[k] for k in free)
        over = [k for k in free if raw[k] * scale > 1]
        if not over:
            return {k: 1.0 if k in dense else raw[k] * scale for k in shapes}
        dense.update(over)
    return {k: 1.0 for k in shapes}


def first_layer_dense_densities(model: nn.Module, density: float, spread: Spread = uniform_spread) -> dict[str, float]:
    """The first prunable tensor dense; the other layers share what is left of keep_count(density, total)
    as `spread` (uniform or ERK) distributes it."""
    shapes = {k: w.shape for k, w in prunable(model).items()}
    first, *rest = shapes
    sizes = {k: math.prod(s) for k, s in shapes.items()}
    budget = keep_count(density, sum(sizes.values()))
    left = budget - sizes[first]
    if left < 0:
        raise ValueError(f"density {density} keeps {budget} weights, fewer than the {sizes[first]} of the first "
                         f"layer {first!r}, which option first_layer_dense keeps dense")
    if not rest:
        return {first: 1.0}
    return {first: 1.0, **spread({k: shapes[k] for k in rest}, left / sum(sizes[k] for k in rest))}


def layer_counts(model: nn.Module, densities: dict[str, float], density: float) -> dict[str, int]:
    """Per-layer kept counts that follow `densities` (capped at 1) and add up to exactly
    keep_count(density, total): rounding each layer alone would miss the global budget, so the
    leftover units go to the layers with the largest remainders (ties: first layer first)."""
    sizes = {k: w.numel() for k, w in prunable(model).items()}
    want = {k: min(densities[k], 1.0) * n for k, n in sizes.items()}
    counts = {k: math.floor(v) for k, v in want.items()}
    short = keep_count(density, sum(sizes.values())) - sum(counts.values())
    room = sorted((k for k in sizes if counts[k] < sizes[k]), key=lambda k: want[k] - counts[k], reverse=True)
    if not 0 <= short <= len(room):
        raise ValueError(f"layer densities add up to {sum(want.values())} weights, not density {density}")
    for k in room[:short]:
        counts[k] += 1
    return counts


def random_mask(model: nn.Module, counts: dict[str, int], generator: torch.Generator) -> Mask:
    """counts[l] weights of layer l, chosen uniformly at random."""
    out = {}
    for k, w in prunable(model).items():
        keep = torch.zeros(w.numel(), dtype=torch.bool)
        keep[torch.randperm(w.numel(), generator=generator)[: counts[k]]] = True
        out[k] = keep.view(w.shape).to(w.device)
    return Mask(out)


def _densities(model: nn.Module, density: float, inputs: PruneInputs, spread: Spread) -> dict[str, float]:
    """Per-layer densities under the requested layer policy (option first_layer_dense, default false)."""
    dense_first = inputs.options.get("first_layer_dense", False)
    if not isinstance(dense_first, bool):
        raise ValueError(f"option first_layer_dense must be true or false, got {dense_first!r}")
    if dense_first:
        return first_layer_dense_densities(model, density, spread)
    return spread({k: w.shape for k, w in prunable(model).items()}, density)


def _random(model: nn.Module, density: float, inputs: PruneInputs, spread: Spread) -> Mask:
    mask = random_mask(model, layer_counts(model, _densities(model, density, inputs, spread), density),
                       inputs.generator)
    if inputs.options.get("first_layer_dense"):
        mask.meta["first_layer_dense"] = True
    return mask


@register("random")
def randomuniform_spread(model: nn.Module, density: float, inputs: PruneInputs) -> Mask:
    return _random(model, density, inputs, uniform_spread)


@register("random-erk")
def randomerk_spread(model: nn.Module, density: float, inputs: PruneInputs) -> Mask:
    return _random(model, density, inputs, erk_spread)


@register("random-like")
def random_layer_matched(model: nn.Module, density: float, inputs: PruneInputs) -> Mask:
    """Uniformly random within each layer, with the per-layer kept counts of another mask (option
    `like`: its file): the baseline that separates a method's layer densities from its wiring."""
    path = inputs.options.get("like")
    if not path:
        raise ValueError("pruning method 'random-like' needs option 'like': the mask file whose layer densities it copies")
    source = Mask.load(path)
    source.check_model(model, source=f"mask file {path}")
    if abs(source.density - density) > 0.01 * density:
        raise ValueError(f"mask file {path} has density {source.density:.6g}, not the {density:.6g} asked for")
    mask = random_mask(model, {k: int(m.sum()) for k, m in source.items()}, inputs.generator)
    mask.meta["like"] = str(path)
    return mask
