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
grows like a product of layer norms: at init about 3e28 for VGG-19 and 4e29 for ResNet-18, with
scores from 1e15 to 1e27, within nine decades of float32's limit (3.4e38); deeper or wider nets
overflow it. The scoring pass therefore always runs in float64, which costs about 1.4x float32
over the whole loop on CPU (VGG-19 at 1.8 %, one thread: 37 s of CPU against 27 s).
"""
from __future__ import annotations

import itertools

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
    """The SynFlow loop with φ = |θ|^power. Live weights are flat positions over all prunable
    tensors, so scoring and thresholding cost grows with the live count, not the model size."""
    model.eval()
    iterations = int(inputs.options.get("iterations", 100))
    if iterations < 1:
        raise ValueError(f"synflow option 'iterations' must be at least 1, got {iterations}")
    weights = prunable(model)
    total = sum(w.numel() for w in weights.values())
    live = torch.arange(total, device=next(iter(weights.values())).device)
    flow = _Flow(model, power, torch.float32, live, inputs.input_shape)
    for t in range(iterations):
        while (scores := flow.scores(live)) is None:
            if flow.dtype == torch.float64:
                raise FloatingPointError("synflow: the flow R overflows even float64")
            flow = _Flow(model, power, torch.float64, live, inputs.input_shape)  # and so on from here
        drop = smallest(scores, live.numel() - keep_count(density ** ((t + 1) / iterations), total))
        flow.phi[live[drop]] = 0
        keep = torch.ones_like(live, dtype=torch.bool)
        keep[drop] = False
        live = live[keep]
    kept = torch.zeros(total, dtype=torch.bool, device=live.device)
    kept[live] = True
    return Mask({k: v.view(w.shape) for (k, w), v in zip(weights.items(), kept.split(flow.sizes))})


class _Flow:
    """`model` with every parameter θ replaced by φ = |θ|^power, in one dtype. The prunable φ are
    views of one flat tensor `phi`, and a pruned weight is a zero in it."""

    def __init__(self, model: nn.Module, power: int, dtype: torch.dtype, live: Tensor,
                 input_shape: tuple[int, int, int]) -> None:
        weights = prunable(model)
        self.model, self.dtype = model, dtype
        self.sizes = [w.numel() for w in weights.values()]
        self.offsets = [0, *itertools.accumulate(self.sizes)]
        self.magnitude = torch.cat([w.detach().to(dtype).abs().flatten() for w in weights.values()])
        self.phi = torch.zeros_like(self.magnitude)
        self.phi[live] = self.magnitude[live] ** power
        self.leaves = [v.view(w.shape).requires_grad_() for v, w in zip(self.phi.split(self.sizes), weights.values())]
        self.params = {k: p.detach().to(dtype).abs() ** power for k, p in model.named_parameters()}
        self.params.update(zip(weights, self.leaves))
        self.buffers = {k: b.to(dtype) if b.is_floating_point() else b for k, b in model.named_buffers()}
        self.ones = torch.ones(1, *input_shape, dtype=dtype, device=live.device)

    def scores(self, live: Tensor) -> Tensor | None:
        """|θ| · |∂R/∂φ| at the sorted flat positions `live`; None where the dtype overflows."""
        flow = functional_call(self.model, (self.params, self.buffers), (self.ones,)).sum()
        if not torch.isfinite(flow):
            return None
        grads = torch.autograd.grad(flow, self.leaves)
        bounds = torch.searchsorted(live, torch.tensor(self.offsets, device=live.device)).tolist()
        per_layer = [torch.take(g, live[a:b] - offset) for g, a, b, offset in zip(grads, bounds, bounds[1:], self.offsets)]
        scores = torch.cat(per_layer).abs_().mul_(torch.take(self.magnitude, live))
        return scores if bool(torch.isfinite(scores).all()) else None


@register("synflow")
def synflow(model: nn.Module, density: float, inputs: PruneInputs) -> Mask:
    return flow_prune(model, density, inputs, power=1)


@register("synflow-l2")
def synflow_l2(model: nn.Module, density: float, inputs: PruneInputs) -> Mask:
    return flow_prune(model, density, inputs, power=2)
