"""SNIP (Lee et al. 2019): keep the weights whose removal would change the loss most, to first order."""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..masks import Mask, prunable
from . import PruneInputs, register


def pruning_batches(inputs: PruneInputs) -> list[tuple[Tensor, Tensor]]:
    """`samples_per_class` (10) x classes training images, cut into batches of `batch_size` (256)
    as PHEW's code feeds SNIP and GraSP."""
    n = inputs.options.get("samples_per_class", 10) * inputs.num_classes
    x, y = inputs.batches(n)
    size = inputs.options.get("batch_size", 256)
    return list(zip(x.split(size), y.split(size)))


@register("snip")
def snip(model: nn.Module, density: float, inputs: PruneInputs) -> Mask:
    """Score |g * w| with g the cross-entropy gradient summed over the batches. BN runs in train
    mode (batch statistics) as for GraSP: at init its running statistics are placeholders."""
    model.train()
    weights = prunable(model)
    grads = [torch.zeros_like(w) for w in weights.values()]
    for x, y in pruning_batches(inputs):
        batch_grads = torch.autograd.grad(F.cross_entropy(model(x), y), list(weights.values()))
        torch._foreach_add_(grads, batch_grads)
    return Mask.from_scores({k: (g * w).abs() for (k, w), g in zip(weights.items(), grads)}, density)
