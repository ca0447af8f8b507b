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

import torch
from torch import Tensor, nn
from torch.func import functional_call

from ..masks import Mask, keep_count, prunable
from . import PruneInputs, register


def top_k(x: Tensor, k: int) -> Tensor:
    """Bool mask of the k largest entries of 1-d `x`, ties to the lower index as a stable sort
    (Mask.from_scores) would break them; a selection, not a sort, so it stays cheap at 20 M."""
    if k == 0:
        return torch.zeros_like(x, dtype=torch.bool)
    kth = torch.kthvalue(x, x.numel() - k + 1).values
    keep = x > kth
    keep[(x == kth).nonzero().flatten()[: k - int(keep.sum())]] = True
    return keep


def flow_prune(model: nn.Module, density: float, inputs: PruneInputs, power: int) -> Mask:
    """The SynFlow loop with φ = |θ|^power. Live weights are tracked as flat indices per layer, so
    scoring and thresholding cost grows with the live count, not the layer size."""
    model.eval()
    iterations = int(inputs.options.get("iterations", 100))
    if iterations < 1:
        raise ValueError(f"synflow option 'iterations' must be at least 1, got {iterations}")
    weights = prunable(model)
    device, f64 = next(iter(weights.values())).device, torch.float64
    magnitude = [w.detach().to(f64).abs().flatten() for w in weights.values()]
    params = {k: p.detach().to(f64).abs() ** power for k, p in model.named_parameters()}
    leaves = [params[k].requires_grad_() for k in weights]
    buffers = {k: b.to(f64) if b.is_floating_point() else b for k, b in model.named_buffers()}
    ones = torch.ones(1, *inputs.input_shape, dtype=f64, device=device)
    live = [torch.arange(w.numel(), device=device) for w in weights.values()]
    total = sum(w.numel() for w in weights.values())
    for t in range(iterations):
        flow = functional_call(model, (params, buffers), (ones,)).sum()
        if not torch.isfinite(flow):
            raise FloatingPointError(f"synflow: the flow R = {flow.item()} is not finite in float64")
        grads = torch.autograd.grad(flow, leaves)
        scores = torch.cat([torch.take(g, i).abs() * torch.take(m, i) for g, m, i in zip(grads, magnitude, live)])
        keep = top_k(scores, keep_count(density ** ((t + 1) / iterations), total)).split([len(i) for i in live])
        with torch.no_grad():
            for leaf, i, k in zip(leaves, live, keep):
                leaf.view(-1)[i[~k]] = 0
        live = [i[k] for i, k in zip(live, keep)]
    return Mask({name: _dense(i, w) for (name, w), i in zip(weights.items(), live)})


def _dense(indices: Tensor, like: Tensor) -> Tensor:
    keep = torch.zeros(like.numel(), dtype=torch.bool, device=like.device)
    keep[indices] = True
    return keep.view(like.shape)


@register("synflow")
def synflow(model: nn.Module, density: float, inputs: PruneInputs) -> Mask:
    return flow_prune(model, density, inputs, power=1)


@register("synflow-l2")
def synflow_l2(model: nn.Module, density: float, inputs: PruneInputs) -> Mask:
    return flow_prune(model, density, inputs, power=2)
