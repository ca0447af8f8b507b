"""PHEW: a mask grown from empty by random walks biased towards strong initial weights (Patil & Dovrolis, ICML 2021).

A walk's steps depend only on the initial weights, never on the mask, so we draw thousands of walks
at once: the walkers of a batch move layer by layer in topological order, and every step is one
inverse-CDF draw (a searchsorted on a cumulative table). The batch is then cut exactly
where the one-walk-at-a-time algorithm stops: after the first walk (in walk order) whose new
weights, those neither kept already nor kept by an earlier walk of the batch, reach the budget.
Walk n is forward from input channel (n/2 mod C_in) if n is even, else backward from output class
((n-1)/2 mod classes).

`phew-res` (PHEW's nested variant) grows each density's mask from the next sparser one, so a seed's masks
are nested along its densities; its mask jobs form a chain from the sparsest density up (sparsenets.study).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from ..graph import INPUT, unit_graph
from ..masks import Mask, keep_count, prunable
from . import PruneInputs, register


class _Sampler:
    """Draws a column given a row of a non-negative matrix, with P proportional to the entry (an
    all-zero row is uniform). One flat, monotone table (row index + the row's CDF) makes a batch
    of draws a single searchsorted."""

    def __init__(self, p: Tensor) -> None:
        p = p.to(torch.float64)
        p = torch.where(p.sum(1, keepdim=True) > 0, p, torch.ones_like(p))
        cdf = p.cumsum(1)
        cdf = cdf / cdf[:, -1:]  # each row ends at exactly 1, so row r spans (r, r + 1]
        self.cols = p.shape[1]
        self.table = (cdf + torch.arange(p.shape[0], dtype=torch.float64, device=p.device)[:, None]).flatten()

    def __call__(self, rows: Tensor, u: Tensor) -> Tensor:
        flat = torch.searchsorted(self.table, rows + u, right=True)
        return (flat - rows * self.cols).clamp_(max=self.cols - 1)  # r + u may round up to r + 1


class _Layer:
    """The unit samplers of one weight tensor W (out, in, kernel...), with A[i, j] = sum |W[i, j]|."""

    def __init__(self, weight: Tensor, offset: int) -> None:
        w = weight.detach().abs().reshape(weight.shape[0], weight.shape[1], -1)
        a = w.sum(2)
        self.forward = _Sampler(a.T)  # input unit j -> output unit i
        self.backward = _Sampler(a)  # output unit i -> input unit j
        self.kernels = w.flatten(0, 1)  # (i, j) -> |W[i, j]| flat
        self.fan_in, self.offset = w.shape[1], offset

    def weight_id(self, i: Tensor, j: Tensor, u: Tensor) -> Tensor:
        """The global id (offset + flat index) of a kernel element of W[i, j], drawn with uniforms u.
        Only the chosen kernels get a table: one per layer would cost 8 bytes a weight."""
        pair = i * self.fan_in + j
        element = _Sampler(self.kernels[pair])(torch.arange(len(pair), device=pair.device), u)
        return self.offset + pair * self.kernels.shape[1] + element


class _Random:
    """Uniforms and indices from one generator, on the walk's device."""

    def __init__(self, generator: torch.Generator, device: torch.device) -> None:
        self.generator, self.device = generator, device

    def uniform(self, n: int) -> Tensor:
        g = self.generator
        return torch.rand(n, generator=g, dtype=torch.float64, device=g.device).to(self.device)

    def index(self, high: int, n: int) -> Tensor:
        g = self.generator
        return torch.randint(high, (n,), generator=g, device=g.device).to(self.device)


class Walker:
    """Batched PHEW walks over one model's initial weights. Weights are identified by a global id:
    their flat index in the concatenation of the prunable tensors, in `prunable` order."""

    def __init__(self, model: nn.Module, input_shape: Sequence[int]) -> None:
        self.graph = unit_graph(model, input_shape)
        self.layers: dict[str, _Layer] = {}
        offset = 0
        for name, w in prunable(model).items():
            self.layers[name] = _Layer(w, offset)
            offset += w.numel()
        self.total = offset

    def forward(self, starts: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """Walks from input channels `starts` to the output: (walk, weight id) of every step taken."""
        rand = _Random(generator, starts.device)
        arrived = {INPUT: [(torch.arange(len(starts), device=starts.device), starts)]}
        steps = []
        for name in [INPUT, *self.graph.layers]:
            edges = self.graph.consumers(name, walked=True)
            if name not in arrived or not edges:  # no walker here, or the output
                continue
            walk, unit = (torch.cat(t) for t in zip(*arrived.pop(name)))
            branch = rand.index(len(edges), len(walk))  # uniform: main path or 1x1 shortcut
            for b, e in enumerate(edges):
                w, u = walk[branch == b], unit[branch == b]
                j = u * e.spread + rand.index(e.spread, len(w))  # a flattened channel: any of its inputs
                layer = self.layers[e.dst]
                i = layer.forward(j, rand.uniform(len(w)))
                steps.append((w, layer.weight_id(i, j, rand.uniform(len(w)))))
                arrived.setdefault(e.dst, []).append((w, i))
        return _cat(steps)

    def backward(self, starts: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """Walks from output units `starts` to the input: (walk, weight id) of every step taken."""
        rand = _Random(generator, starts.device)
        arrived = {self.graph.output: [(torch.arange(len(starts), device=starts.device), starts)]}
        steps = []
        for name in reversed(self.graph.layers):
            if name not in arrived:
                continue
            walk, i = (torch.cat(t) for t in zip(*arrived.pop(name)))
            layer = self.layers[name]
            j = layer.backward(i, rand.uniform(len(walk)))
            steps.append((walk, layer.weight_id(i, j, rand.uniform(len(walk)))))
            edges = self.graph.sources(name, walked=True)
            branch = rand.index(len(edges), len(walk))  # uniform: main path or 1x1 shortcut
            for b, e in enumerate(edges):
                if e.src != INPUT:
                    sel = branch == b
                    arrived.setdefault(e.src, []).append((walk[sel], j[sel] // e.spread))
        return _cat(steps)


def _cat(steps: list[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
    walks, ids = zip(*steps)
    return torch.cat(walks), torch.cat(ids)


def take_walks(kept: Tensor, walk: Tensor, ids: Tensor, walks: int, need: int) -> tuple[int, int]:
    """Add walks 0, 1, ... of a batch to the flat mask `kept` (in place), up to and including the
    first whose cumulative new weights reach `need` (all walks if none does). Returns the number of
    walks taken and of weights added."""
    fresh = ~kept[ids]
    walk, ids = walk[fresh], ids[fresh]
    uniq, inverse = torch.unique(ids, return_inverse=True)
    first = torch.full_like(uniq, walks).scatter_reduce_(0, inverse, walk, "amin")  # the walk that adds it
    gained = torch.bincount(first, minlength=walks).cumsum(0)
    reached = torch.nonzero(gained >= need)
    taken = int(reached[0]) + 1 if len(reached) else walks
    kept[uniq[first < taken]] = True
    return taken, int(gained[taken - 1])


@register("phew-reinit")
@register("phew")
def phew(model: nn.Module, density: float, inputs: PruneInputs) -> Mask:
    """Option `walkers` (default 16384): walks drawn per batch. It trades memory for speed; the rule
    and the distribution of the mask do not depend on it, but the draws (so the mask) do."""
    return _grow(model, density, inputs, None)


@register("phew-res")
def phew_res(model: nn.Module, density: float, inputs: PruneInputs) -> Mask:
    """PHEW's nested variant (the reference code's PHEW_Res): densities are built from the sparsest up, and
    each one's walks start from the next sparser mask (`inputs.start`) and only add weights, so every mask of
    the chain holds the sparser ones. As in the reference, the walk count restarts (walk 0 leaves input
    channel 0) while the randomness continues: the sparser mask hands on `next_seed`, drawn from its stream
    after its last walk. Without `start` (the sparsest density) it is `phew` itself."""
    start = inputs.start
    if start is not None:
        if "next_seed" not in start.meta:
            raise ValueError("phew-res: the sparser mask it grows from has no next_seed; build it with phew-res")
        inputs.generator.manual_seed(int(start.meta["next_seed"]))
    mask = _grow(model, density, inputs, start)
    mask.meta["next_seed"] = int(torch.randint(2**62, (1,), generator=inputs.generator))  # a denser one goes on
    return mask


def _grow(model: nn.Module, density: float, inputs: PruneInputs, start: Mask | None) -> Mask:
    """Walks added to `start` (or to an empty mask) until exactly `density` of the weights are kept."""
    walker = Walker(model, inputs.input_shape)
    half = max(1, int(inputs.options.get("walkers", 16384)) // 2)
    device = next(iter(prunable(model).values())).device
    budget = keep_count(density, walker.total)
    kept = _flat(start, model, device) if start is not None else torch.zeros(
        walker.total, dtype=torch.bool, device=device)
    walks, count = 0, int(kept.sum())
    if count > budget:
        raise ValueError(f"phew-res: the mask to grow from keeps {count} weights, more than density {density} "
                         f"keeps ({budget}); list its densities from the sparsest up")
    channels, classes = walker.graph.units[INPUT], walker.graph.units[walker.graph.output]
    while count < budget:
        k = walks // 2 + torch.arange(half, device=device)  # the batch's forward and backward walks are the k-th
        fwalk, fids = walker.forward(k % channels, inputs.generator)
        bwalk, bids = walker.backward(k % classes, inputs.generator)
        walk = torch.cat([2 * fwalk, 2 * bwalk + 1])  # interleaved: forward walks even, backward odd
        taken, added = take_walks(kept, walk, torch.cat([fids, bids]), 2 * half, budget - count)
        if added == 0:
            raise RuntimeError(f"phew: {2 * half} walks added no weight at {count} of {budget} kept; "
                               "the walks cannot reach this density")
        walks, count = walks + taken, count + added
    out, start_at = {}, 0
    for name, w in prunable(model).items():
        out[name] = kept[start_at : start_at + w.numel()].view(w.shape)
        start_at += w.numel()
    return Mask(out, {"walks": walks, "kept": count, "budget": budget})


def _flat(mask: Mask, model: nn.Module, device: torch.device) -> Tensor:
    """A mask of `model` as one flat bool vector in `prunable` order (the walker's weight ids)."""
    mask.check_model(model, source="the mask phew-res grows from")
    return torch.cat([mask[name].flatten() for name in prunable(model)]).to(device)
