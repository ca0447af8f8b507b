"""Random masks: uniform per layer, and Erdős–Rényi-Kernel (ERK) layer densities."""
from __future__ import annotations

import math

import torch
from torch import nn

from ..masks import Mask, keep_count, prunable
from . import PruneInputs, register


def uniform_densities(model: nn.Module, density: float) -> dict[str, float]:
    return {k: density for k in prunable(model)}


def erk_densities(model: nn.Module, density: float) -> dict[str, float]:
    """Layer density proportional to (sum of dims)/(product of dims), scaled to the global budget;
    layers that would exceed 1 are made dense and the rest rescaled (RigL's ERK)."""
    weights = prunable(model)
    sizes = {k: w.numel() for k, w in weights.items()}
    raw = {k: sum(w.shape) / math.prod(w.shape) for k, w in weights.items()}
    budget = density * sum(sizes.values())
    dense: set[str] = set()
    while len(dense) < len(weights):
        free = [k for k in weights if k not in dense]
        scale = (budget - sum(sizes[k] for k in dense)) / sum(raw[k] * sizes[k] for k in free)
        over = [k for k in free if raw[k] * scale > 1]
        if not over:
            return {k: 1.0 if k in dense else raw[k] * scale for k in weights}
        dense.update(over)
    return {k: 1.0 for k in weights}


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


@register("random")
def random_uniform(model: nn.Module, density: float, inputs: PruneInputs) -> Mask:
    return random_mask(model, layer_counts(model, uniform_densities(model, density), density), inputs.generator)


@register("random-erk")
def random_erk(model: nn.Module, density: float, inputs: PruneInputs) -> Mask:
    return random_mask(model, layer_counts(model, erk_densities(model, density), density), inputs.generator)


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
