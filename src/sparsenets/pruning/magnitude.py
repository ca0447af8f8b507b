"""Magnitude at initialisation: the data-free baseline that looks at nothing but the initial weights.

Registered as `magnitude`; figures and tables show it as "magnitude at init" (its catalogue label), apart
from magnitude pruning after training (PHEW's MAG reference)."""
from __future__ import annotations

from torch import nn

from ..masks import Mask, prunable
from . import PruneInputs, register


@register("magnitude")
def magnitude(model: nn.Module, density: float, inputs: PruneInputs) -> Mask:
    """Keep the largest |w| globally, so layers with a small init scale (wide fan-in) lose most."""
    return Mask.from_scores({k: w.detach().abs() for k, w in prunable(model).items()}, density)
