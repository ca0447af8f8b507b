"""SGD with momentum, Nesterov and weight decay: the update of torch.optim.SGD, bit for bit.

Why not torch.optim.SGD itself: every torch.optim.Optimizer method imports torch._dynamo on first
use (to shield itself from the compiler), 1.2 s of a 4 s job start-up on a CPU (README, Performance).
The interface is the part the training loop and the topologies use: `param_groups[0]["lr"]`,
`state[param]["momentum_buffer"]`, `zero_grad`, `step`, `state_dict` and `load_state_dict`.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor


class SGD:
    def __init__(self, params: Iterable[Tensor], *, lr: float, momentum: float = 0.0, nesterov: bool = False,
                 weight_decay: float = 0.0) -> None:
        if nesterov and momentum <= 0:
            raise ValueError("Nesterov momentum needs a positive momentum")
        self.params = list(params)
        self.param_groups = [{"params": self.params, "lr": lr, "momentum": momentum, "nesterov": nesterov,
                              "weight_decay": weight_decay}]
        self.state: dict[Tensor, dict[str, Tensor]] = {}

    def zero_grad(self) -> None:
        grads = [p.grad for p in self.params if p.grad is not None]
        if grads:
            torch._foreach_zero_(grads)

    @torch.no_grad()
    def step(self) -> None:
        """g = grad + wd·p; buf = m·buf + g (g itself on the first step); p -= lr·(g + m·buf if Nesterov else buf).

        Multi-tensor (foreach) operations, as torch.optim.SGD uses by default on a GPU; on a CPU they run the
        same per-tensor arithmetic as its default loop, so both devices match torch bit for bit.
        """
        group = self.param_groups[0]
        lr, momentum, wd = group["lr"], group["momentum"], group["weight_decay"]
        params = [p for p in self.params if p.grad is not None]
        grads = [p.grad for p in params]
        if wd:
            grads = torch._foreach_add(grads, params, alpha=wd)
        if momentum:
            bufs = [self.state.get(p, {}).get("momentum_buffer") for p in params]
            if all(b is not None for b in bufs):
                torch._foreach_mul_(bufs, momentum)
                torch._foreach_add_(bufs, grads)
            else:
                for i, (p, b) in enumerate(zip(params, bufs)):
                    if b is None:
                        bufs[i] = self.state.setdefault(p, {})["momentum_buffer"] = grads[i].clone()
                    else:
                        b.mul_(momentum).add_(grads[i])
            grads = torch._foreach_add(grads, bufs, alpha=momentum) if group["nesterov"] else bufs
        torch._foreach_add_(params, grads, alpha=-lr)

    def state_dict(self) -> dict[str, Any]:
        """Momentum buffers by parameter position (tensors are not keys that survive a file)."""
        return {"lr": self.param_groups[0]["lr"],
                "momentum_buffer": [self.state.get(p, {}).get("momentum_buffer") for p in self.params]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        bufs = state["momentum_buffer"]
        if len(bufs) != len(self.params):
            raise ValueError(f"optimizer state holds {len(bufs)} parameters, this model has {len(self.params)}")
        self.param_groups[0]["lr"] = state["lr"]
        self.state = {p: {"momentum_buffer": b.to(p.device).clone(memory_format=torch.preserve_format)}
                      for p, b in zip(self.params, bufs) if b is not None}
