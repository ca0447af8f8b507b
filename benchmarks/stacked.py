"""Would several small runs in one job help on this CPU? `n` conv nets trained as one stacked model
(torch.func: stacked weights, a vmapped forward, one backward) against the same nets one after the other.

Measured only: the pipeline keeps one run per job. Both sides get the same batches, already on the
device, so only the compute differs; BatchNorm runs without running statistics on both sides,
because a vmapped forward cannot update them in place.
"""
from __future__ import annotations

import functools
import statistics
import time
from typing import Callable

import torch
from torch.func import functional_call, replace_all_batch_norm_modules_, stack_module_state, vmap
from torch.nn import functional as F

from sparsenets.cli import keep_freed_memory
from sparsenets.models import build_model

from . import alternate, isolated, ratio
from .train_step import BATCH, CLASSES, SHAPE, recipe


def _nets(n: int, device: torch.device) -> list[torch.nn.Module]:
    keep_freed_memory()  # either way is a job
    nets = [build_model("convnet", CLASSES, SHAPE, seed=i).to(device) for i in range(n)]
    for net in nets:
        replace_all_batch_norm_modules_(net)
    return nets


def _sgd(params: list[torch.Tensor]) -> torch.optim.Optimizer:
    rec = recipe()
    return torch.optim.SGD(params, lr=rec.lr, momentum=rec.momentum, nesterov=rec.nesterov,
                           weight_decay=rec.weight_decay)


def _batches(n: int, steps: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(steps, n, BATCH, *SHAPE, generator=g).to(device)
    return x, torch.randint(CLASSES, (steps, n, BATCH), generator=g).to(device)


def one_after_another(n: int, steps: int, device: torch.device) -> Callable[[], float]:
    """A call trains every net `steps` steps, net by net in turn, in the recipe's layout; returns images per second."""
    nets = _nets(n, device)
    layout = torch.channels_last if recipe().uses_channels_last(device) else torch.contiguous_format
    for net in nets:
        net.to(memory_format=layout)
    optimizers = [_sgd(list(net.parameters())) for net in nets]
    xs, ys = _batches(n, steps, device)

    def run() -> float:
        t0 = time.perf_counter()
        for x, y in zip(xs, ys):
            for net, opt, xi, yi in zip(nets, optimizers, x, y):
                loss = F.cross_entropy(net(xi.contiguous(memory_format=layout)), yi)
                opt.zero_grad()
                loss.backward()
                opt.step()
        loss.item()
        return n * steps * BATCH / (time.perf_counter() - t0)

    return run


def stacked(n: int, steps: int, device: torch.device) -> Callable[[], float]:
    """A call trains the `n` nets as one stacked model for `steps` steps; returns images per second."""
    params, buffers = stack_module_state(_nets(n, device))
    skeleton = _nets(1, torch.device("meta"))[0]

    def loss_of(p: dict, b: dict, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(functional_call(skeleton, (p, b), (x,)), y)

    losses = vmap(loss_of)
    optimizer = _sgd(list(params.values()))
    xs, ys = _batches(n, steps, device)

    def run() -> float:
        t0 = time.perf_counter()
        for x, y in zip(xs, ys):
            loss = losses(params, buffers, x, y).sum()  # the nets share no weights: each gets its own gradient
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        loss.item()
        return n * steps * BATCH / (time.perf_counter() - t0)

    return run


def stacking_gain(n: int, device: torch.device, *, threads: int, rounds: int, steps: int) -> dict[str, float]:
    """Images per second of both ways, and their ratio (above 1: stacking helps)."""
    makes = {"stacked": functools.partial(stacked, n, steps, device),
             "one_after_another": functools.partial(one_after_another, n, steps, device)}
    with isolated(makes, threads) as sides:
        ips = alternate(sides, rounds)
    return {"nets": n, **{f"{k}_images_per_s": statistics.median(v) for k, v in ips.items()},
            "gain": ratio(ips["stacked"], ips["one_after_another"])}
