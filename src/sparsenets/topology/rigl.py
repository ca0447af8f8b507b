"""RigL (Evci et al. 2020): fixed-size sparse training whose structure is rewired every ΔT steps.

Between rewirings it is static training. On a rewiring step the optimizer first takes its usual
masked step; then, in every layer, the α_t fraction of active weights with the smallest |w| is
dropped and as many inactive ones with the largest |gradient| on that step's batch are grown, so
each layer keeps its count. As in the paper's Algorithm 1 (and its reference code), the grow
candidates are all weights inactive after the drop, including those just dropped; a weight dropped
and regrown simply stays, with its value and momentum. Newly grown weights start at exactly 0 with
zero momentum (they were pruned, hence already 0).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..masks import Mask, keep_count
from ..optim import SGD
from . import Schedule, Topology, register


@register("rigl")
class RigL(Topology):
    """Rewire at steps ΔT, 2ΔT, ... below T_end = end_fraction * total steps, dropping and growing
    α_t = alpha * (1 + cos(π t / T_end)) / 2 of each layer's active weights."""

    def __init__(self, model: nn.Module, mask: Mask, optimizer: SGD, schedule: Schedule,
                 delta_t: int = 100, end_fraction: float = 0.75, alpha: float = 0.3) -> None:
        if not isinstance(delta_t, int) or delta_t < 1:
            raise ValueError(f"rigl option delta_t must be a positive integer, got {delta_t!r}")
        if not 0.0 < end_fraction <= 1.0:
            raise ValueError(f"rigl option end_fraction must be in (0, 1], got {end_fraction!r}")
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"rigl option alpha must be in (0, 1], got {alpha!r}")
        super().__init__(model, mask, optimizer, schedule, delta_t=delta_t, end_fraction=end_fraction, alpha=alpha)
        self.delta_t, self.alpha = delta_t, alpha
        self.t_end = end_fraction * schedule.total_steps
        self.counts = {k: int(m.sum()) for k, m in self.mask.items()}
        self._grads: list[Tensor] | None = None

    def rewires_at(self, step: int) -> bool:
        return 0 < step < self.t_end and step % self.delta_t == 0

    def drop_fraction(self, step: int) -> float:
        return self.alpha * (1 + math.cos(math.pi * step / self.t_end)) / 2

    @torch.no_grad()
    def before_step(self, step: int) -> None:
        """Keep the dense gradients of a rewiring step before the static scheme masks them."""
        if self.rewires_at(step):
            if any(p.grad is None for p in self._params):
                raise RuntimeError(f"rigl needs the gradients of every prunable weight at step {step}")
            self._grads = [p.grad.detach().clone() for p in self._params]
        super().before_step(step)

    def after_step(self, step: int) -> None:
        if self._grads is not None:
            self.mask = self._rewired(self.drop_fraction(step))
            self._grads = None
        super().after_step(step)  # zeroes the dropped weights and their momentum

    @torch.no_grad()
    def _rewired(self, fraction: float) -> Mask:
        new = {}
        for name, w, grad in zip(self._names, self._params, self._grads):
            active = self.mask[name].flatten()
            n_drop = keep_count(fraction, self.counts[name])
            kept = _top(w.abs().flatten().masked_fill(~active, -math.inf), self.counts[name] - n_drop)
            grown = _top(grad.abs().flatten().masked_fill(kept, -math.inf), n_drop)
            new[name] = (kept | grown).view(w.shape)
        return Mask(new, self.mask.meta)


def _top(scores: Tensor, k: int) -> Tensor:
    """The k highest scores as a bool vector; a stable sort breaks ties by position, deterministically."""
    keep = torch.zeros(scores.numel(), dtype=torch.bool, device=scores.device)
    keep[torch.sort(scores, descending=True, stable=True).indices[:k]] = True
    return keep
