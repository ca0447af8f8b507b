"""SynFlow (Tanaka et al. 2020) and PHEW's SynFlow-L2: iterative, data-free pruning by path flow.

Both run one loop. Every parameter θ is replaced by φ = |θ| (synflow) or θ² (synflow-l2), an
all-ones image goes through the net, and R = sum of outputs is the total flow over input-output
paths. A prunable weight scores |θ| · |∂R/∂φ| (for synflow that is |θ · ∂R/∂θ|). Over
`options["iterations"]` (100) rounds the kept fraction falls as d^((t+1)/iterations); each round
rescores the surviving net, so a weight that no longer lies on a live path scores 0 and goes next.

BatchNorm runs in eval mode on its running statistics, which at init are mean 0 and variance 1:
each BN is the positive map x · φ(γ)/√(1+ε) + φ(β), so R stays a polynomial in φ with
non-negative coefficients and every ReLU passes everything. (In train mode BN would subtract the
mean of the one all-ones image, and R would no longer count paths.) Nothing renormalises, so R
grows like a product of layer norms: at init about 3e28 for VGG-19 and 4e29 for ResNet-18 with
100 classes, nine decades below float32's limit; deeper nets can overflow it.

The scoring pass always runs in float64. Float32 does not overflow on our nets, but at VGG-19's
first cut neighbouring scores differ by a median 2e-6 (relative), about what float32 rounding
accumulates over the passes' long sums. A float32 run of VGG-19 at 1.8 % keeps a set that differs
from the float64 one in 4 % of its weights (3.5 % for SynFlow-L2): rounding, not flow, picks them.
Float64 costs 1.4x (54 s against 39 s for that run, one thread, shared CPU).
"""
from __future__ import annotations

import itertools
from typing import Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call

from ..masks import Mask, keep_count, prunable
from . import PruneInputs, register


def smallest(x: Tensor, d: int) -> Tensor:
    """Positions of the d smallest entries of 1-d `x`; among ties the higher positions go first, so
    the rest is exactly the top by a stable descending sort (as in Mask.from_scores). A strided
    sample brackets the cut, so the exact selection runs on a few percent of `x` only: the loop
    calls this 100 times on up to 20 M scores."""
    if d == 0:
        return torch.zeros(0, dtype=torch.long, device=x.device)
    sample = x[:: max(1, x.numel() // 2**16)]
    rank = min(sample.numel(), int(1.1 * d * sample.numel() / x.numel()) + 64)
    low = (x <= torch.kthvalue(sample, rank).values).nonzero().flatten()
    if low.numel() < d:  # the sample missed: select among all
        low = torch.arange(x.numel(), device=x.device)
    candidates = x[low]
    cut = torch.kthvalue(candidates, d).values
    below, ties = low[candidates < cut], low[candidates == cut]
    return torch.cat([below, ties[ties.numel() - (d - below.numel()):]])


def flow_prune(model: nn.Module, density: float, inputs: PruneInputs, power: int) -> Mask:
    """The SynFlow loop with φ = |θ|^power. The prunable φ are views of one flat tensor (a pruned
    weight is a zero in it) and the live weights are sorted flat positions into it, so scoring and
    thresholding cost grows with the live count, not the model size."""
    model.eval()
    iterations = int(inputs.options.get("iterations", 100))
    if iterations < 1:
        raise ValueError(f"synflow option 'iterations' must be at least 1, got {iterations}")
    weights = prunable(model)
    device, sizes = next(iter(weights.values())).device, [w.numel() for w in weights.values()]
    magnitude = torch.cat([w.detach().to(torch.float64).abs().flatten() for w in weights.values()])
    phi = magnitude**power
    leaves = [v.view(w.shape).requires_grad_() for v, w in zip(phi.split(sizes), weights.values())]
    params = {k: p.detach().to(torch.float64).abs() ** power for k, p in model.named_parameters()}
    params.update(zip(weights, leaves))
    buffers = {k: b.to(torch.float64) if b.is_floating_point() else b for k, b in model.named_buffers()}
    ones = torch.ones(1, *inputs.input_shape, dtype=torch.float64, device=device)
    live = torch.arange(magnitude.numel(), device=device)
    for t in range(iterations):
        flow = functional_call(model, (params, buffers), (ones,)).sum()
        if not torch.isfinite(flow):
            raise FloatingPointError(f"synflow: the flow R = {flow.item()} overflows float64")
        grads = torch.autograd.grad(flow, leaves)
        scores = _take(grads, live).abs_().mul_(torch.take(magnitude, live))
        drop = smallest(scores, live.numel() - keep_count(density ** ((t + 1) / iterations), magnitude.numel()))
        phi[live[drop]] = 0
        keep = torch.ones_like(live, dtype=torch.bool)
        keep[drop] = False
        live = live[keep]
    kept = torch.zeros(magnitude.numel(), dtype=torch.bool, device=device)
    kept[live] = True
    return Mask({k: v.view(w.shape) for (k, w), v in zip(weights.items(), kept.split(sizes))})


def _take(tensors: Sequence[Tensor], positions: Tensor) -> Tensor:
    """The entries at sorted flat `positions` of the tensors laid end to end, without paying for
    a copy of them all."""
    offsets = [0, *itertools.accumulate(t.numel() for t in tensors)]
    bounds = torch.searchsorted(positions, torch.tensor(offsets, device=positions.device)).tolist()
    return torch.cat([torch.take(t, positions[a:b] - offset)
                      for t, a, b, offset in zip(tensors, bounds, bounds[1:], offsets)])


@register("synflow")
def synflow(model: nn.Module, density: float, inputs: PruneInputs) -> Mask:
    return flow_prune(model, density, inputs, power=1)


@register("synflow-l2")
def synflow_l2(model: nn.Module, density: float, inputs: PruneInputs) -> Mask:
    return flow_prune(model, density, inputs, power=2)
