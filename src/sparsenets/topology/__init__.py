"""How the structure moves during training: one small interface the one training loop calls.

The loop, per step:   before_forward(step) -> forward/backward -> before_step(step)
                      -> optimizer.step() -> after_step(step)
and per epoch:        end_epoch(epoch) -> evaluation inside `evaluating()`.
`mask` is always the structure in force (for DNW: the current top-k of |w|).
"""
from __future__ import annotations

import importlib
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch
from torch import nn

from .. import catalogue
from ..masks import Mask, prunable
from ..optim import SGD


@dataclass
class Schedule:
    """What a topology may need to know about the run."""

    steps_per_epoch: int
    epochs: int
    generator: torch.Generator  # the mask seed's stream, for any random structural choice

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.epochs


class Topology:
    """Static sparse training: the mask never changes; pruned weights and their momentum stay 0."""

    name = "static"
    starts_dense = False  # DNW begins from every weight of the init; the others from the masked init
    method = True  # a study may list it as a method; False: a phase of another method (register: the catalogue's kind)

    def __init__(self, model: nn.Module, mask: Mask, optimizer: SGD, schedule: Schedule,
                 **options: Any) -> None:
        self.model, self.optimizer, self.schedule, self.options = model, optimizer, schedule, options
        self.weights = prunable(model)
        self.mask = mask
        self.mask.check_model(model)
        if not self.starts_dense:
            self.mask.apply(model)

    @property
    def mask(self) -> Mask:
        return self._mask

    @mask.setter
    def mask(self, mask: Mask) -> None:
        device = next(iter(self.weights.values())).device
        self._mask = mask.to(device)
        self._names = list(self._mask)
        self._params = [self.weights[k] for k in self._names]
        self._factors = [self._mask[k].to(self.weights[k].dtype) for k in self._names]

    def before_forward(self, step: int) -> None:
        pass

    @torch.no_grad()
    def before_step(self, step: int) -> None:
        """Masked gradients keep the momentum of pruned weights at exactly zero."""
        grads = [p.grad for p in self._params]
        if all(g is not None for g in grads):
            torch._foreach_mul_(grads, self._factors)

    @torch.no_grad()
    def after_step(self, step: int) -> None:
        torch._foreach_mul_(self._params, self._factors)
        bufs = [self.optimizer.state.get(p, {}).get("momentum_buffer") for p in self._params]
        if all(b is not None for b in bufs):
            torch._foreach_mul_(bufs, self._factors)

    def end_epoch(self, epoch: int) -> None:
        pass

    @contextmanager
    def evaluating(self) -> Iterator[None]:
        yield

    def state_dict(self) -> dict[str, Any]:
        return {"mask": {k: v.cpu() for k, v in self.mask.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.mask = Mask(state["mask"], self.mask.meta)


TOPOLOGIES: dict[str, Callable[..., Topology]] = {"static": Topology}


def register(name: str) -> Callable[[type[Topology]], type[Topology]]:
    """Register a topology under the name of its catalogue entry: a method a study may list (kind topology) or
    a phase of another method (kind phase: mag's gradual pruning)."""
    entry = catalogue.entry(catalogue.METHODS, name, "topology")
    if entry.kind not in ("topology", "phase"):
        raise ValueError(f"topology {name!r}: its catalogue entry is of kind {entry.kind!r}, not topology or phase")

    def deco(cls: type[Topology]) -> type[Topology]:
        cls.name, cls.method = name, entry.kind == "topology"
        TOPOLOGIES[name] = cls
        return cls

    return deco


def load_all() -> None:
    """Import the module of every topology in the catalogue: each registers its class."""
    for module in dict.fromkeys(catalogue.METHODS[n].module for n in catalogue.of_kind("topology", "phase")):
        importlib.import_module(f"{__name__}.{module}")


def make_topology(name: str, model: nn.Module, mask: Mask, optimizer: SGD, schedule: Schedule,
                  **options: Any) -> Topology:
    load_all()
    if name not in TOPOLOGIES:
        raise ValueError(f"unknown topology {name!r}; known: {', '.join(sorted(TOPOLOGIES))}")
    return TOPOLOGIES[name](model, mask, optimizer, schedule, **options)


def methods() -> list[str]:
    """The topologies a study may list as methods (static and phases such as mag's pruning left out)."""
    load_all()
    return sorted(name for name, cls in TOPOLOGIES.items() if name != "static" and getattr(cls, "method", True))


__all__ = ["Schedule", "Topology", "TOPOLOGIES", "load_all", "make_topology", "methods", "register"]
