"""Gradual magnitude pruning: the pruning phase of `mag`, PHEW's reference of pruning *after* training.

It starts from a trained dense network and, at the start of epoch e = 1..E of its run, keeps the largest |w|
globally so that the pruned fraction is p_e = P - P (1 - e/E)^3 (P = 1 - density): the cubic schedule of
PHEW's code, which recomputes the mask once per epoch (not per step) before training that epoch under it, so
the last epoch already trains at the final density. Pruned weights stay pruned (only kept weights compete).
Not a method a study lists: sparsenets.study gives it to mag's pruning run only.
"""
from __future__ import annotations

import torch
from torch import nn

from ..masks import Mask, check_density, keep_count
from ..optim import SGD
from . import Schedule, Topology, register


def pruned_fraction(epoch: int, epochs: int, final: float) -> float:
    """p_e = P - P (1 - e/E)^3: the cubic schedule, fast early and gentle near the end (p_E = P)."""
    return final - final * (1.0 - epoch / epochs) ** 3


@register("gradual-magnitude")
class GradualMagnitude(Topology):
    """Option `density`: the kept fraction after the last epoch (exact: the same rounding as every mask)."""


    def __init__(self, model: nn.Module, mask: Mask, optimizer: SGD, schedule: Schedule,
                 density: float | None = None) -> None:
        if density is None:
            raise ValueError("topology gradual-magnitude needs option density (the final kept fraction)")
        check_density(density)
        super().__init__(model, mask, optimizer, schedule, density=density)
        self.density = float(density)

    def target(self, epoch: int) -> int:
        """Weights kept while training epoch `epoch` (0-based): the schedule at e = epoch + 1."""
        e = min(epoch + 1, self.schedule.epochs)
        return keep_count(1.0 - pruned_fraction(e, self.schedule.epochs, 1.0 - self.density), self.mask.total)

    @torch.no_grad()
    def before_forward(self, step: int) -> None:
        if step % self.schedule.steps_per_epoch == 0:
            self._prune(min(self.target(step // self.schedule.steps_per_epoch), self.mask.kept))

    @torch.no_grad()
    def _prune(self, keep: int) -> None:
        """Keep the `keep` largest |w| among the kept weights; zero the rest and their momentum."""
        scores = {k: torch.where(self.mask[k], p.detach().abs().double(), -1.0)
                  for k, p in zip(self._names, self._params)}
        pruned = Mask.top(scores, keep)
        pruned.meta.update(self.mask.meta)
        self.mask = pruned
        self.after_step(-1)  # weights and momentum of the newly pruned: exactly zero
