"""GraSP (Wang et al. 2020): keep the weights that preserve gradient flow after pruning."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ..masks import Mask, prunable
from . import PruneInputs, register
from .snip import pruning_batches


@register("grasp")
def grasp(model: nn.Module, density: float, inputs: PruneInputs) -> Mask:
    """Score w * (H g) on the loss of logits / temperature (200), keep the highest.

    Sign convention: GraSP's code computes S = -w * Hg and removes the *largest* S, i.e. keeps the
    largest w * Hg; SynFlow's and PHEW's GraSP keep the largest w * Hg directly. Same mask. Their
    division by |sum of scores| does not change the ranking and is left out. g and Hg are taken
    over the prunable weights only (as GraSP's code; PHEW's includes biases and BN in g). BN runs
    in train mode (batch statistics), as in GraSP's and PHEW's code.
    """
    model.train()
    named = prunable(model)
    weights = list(named.values())
    temperature = inputs.options.get("temperature", 200.0)
    batches = pruning_batches(inputs)

    def loss_grads(x: torch.Tensor, y: torch.Tensor, create_graph: bool) -> tuple[torch.Tensor, ...]:
        loss = F.cross_entropy(model(x) / temperature, y)
        return torch.autograd.grad(loss, weights, create_graph=create_graph)

    g = [torch.zeros_like(w) for w in weights]
    for x, y in batches:
        torch._foreach_add_(g, loss_grads(x, y, create_graph=False))
    hg = [torch.zeros_like(w) for w in weights]
    for x, y in batches:
        # d/dw (g_stopped . grad L) = H g: one double backward per batch
        gnorm = sum((a * b).sum() for a, b in zip(g, loss_grads(x, y, create_graph=True)))
        torch._foreach_add_(hg, torch.autograd.grad(gnorm, weights))
    return Mask.from_scores({k: (w * h).detach() for k, w, h in zip(named, weights, hg)}, density)
