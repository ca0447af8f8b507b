"""Training throughput: our step against a plain torchvision loop, and what the static mask costs.

Both sides train the same network from the same init with the same SGD recipe and batch size, on
random uint8 images of CIFAR's shape, at the same torch thread count (the pipeline's
`threads_per_job`), each in a process of its own. Ours is `sparsenets.train.train` as a job runs
it: a DeviceLoader cropping, flipping and normalising on the device, a static mask, the recipe's
precision and layout, the job's allocator setting (`keep_freed_memory`). The reference is what a
user would write: torchvision RandomCrop(32, padding=4), RandomHorizontalFlip, ToTensor and
Normalize on PIL images in a DataLoader whose workers get the spare cores; fp32 NCHW.
"""
from __future__ import annotations

import functools
import itertools
import os
import statistics
import time
from typing import Any, Callable, Iterator

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from sparsenets import data
from sparsenets.cli import keep_freed_memory
from sparsenets.masks import Mask, prunable
from sparsenets.models import build_model
from sparsenets.topology import TOPOLOGIES, Schedule, Topology
from sparsenets.train import Recipe, evaluate, seeded_generator, train

from . import alternate, config, isolated, ratio

BATCH = 128
SHAPE, CLASSES = (3, 32, 32), 10
MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
REFERENCE_IMAGES = 5000
CIFAR_TRAIN, CIFAR_TEST = 50_000, 10_000


class Unmasked(Topology):
    """The static loop without the mask's per-step work: the baseline the mask's overhead is measured against."""

    name, method = "bench-unmasked", False  # a benchmark's baseline, no method: not in sparsenets.catalogue

    def before_step(self, step: int) -> None:
        pass

    def after_step(self, step: int) -> None:
        pass


TOPOLOGIES[Unmasked.name] = Unmasked


def cifar_like(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, CLASSES, n).astype(np.int64)


def random_mask(model: torch.nn.Module, density: float, seed: int = 0) -> Mask:
    g = torch.Generator().manual_seed(seed)
    return Mask.from_scores({k: torch.rand(w.shape, generator=g) for k, w in prunable(model).items()}, density)


def recipe(**overrides: Any) -> Recipe:
    """One epoch of the pipeline's `quick` recipe (its lr and momentum; no lr step within it)."""
    quick = {**config()["recipes"]["quick"], "epochs": 1, "milestones": [], "train_subset": None}
    return Recipe.from_dict({**quick, "batch_size": BATCH, **overrides})


def ours(model_name: str, device: torch.device, steps: int, *, topology: str = "static",
         topology_options: dict | None = None, density: float = 0.1, **overrides: Any) -> Callable[[], float]:
    """A call trains one epoch of `steps` batches with `train` and returns its images per second."""
    keep_freed_memory()  # as every job does when it starts
    rec = recipe(**overrides)
    x, y = cifar_like(steps * BATCH)
    model = build_model(model_name, CLASSES, SHAPE, seed=0).to(device)
    mask = random_mask(model, density)
    loader = dict(batch_size=BATCH, device=device, mean=MEAN, std=STD)  # as run_training builds them
    train_loader = data.DeviceLoader(x, y, train=True, seed=0, augment=rec.augment, **loader)
    no_test = data.DeviceLoader(x[:0], y[:0], train=False, seed=0, **loader)  # the epoch's time is the training's

    def run() -> float:
        result = train(model, mask, rec, train_loader, no_test, generator=seeded_generator(0), topology=topology,
                       topology_options=topology_options, log=lambda _: None)
        return steps * BATCH / result.history[-1]["seconds"]

    return run


class _PIL(Dataset):
    """uint8 NHWC images served as PIL images through transforms, as torchvision's CIFAR10 does."""

    def __init__(self, x: np.ndarray, y: np.ndarray, transform: Callable) -> None:
        self.x, self.y, self.transform = x, y, transform

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(Image.fromarray(self.x[i])), int(self.y[i])


def reference_workers(threads: int) -> int:
    """Loader workers a user would give: the cores the training threads leave free, at least one."""
    return max(1, (os.cpu_count() or 1) - threads)


def reference(model_name: str, device: torch.device, steps: int, workers: int) -> Callable[[], float]:
    """A call trains `steps` batches of the plain loop and returns its images per second."""
    rec = recipe()
    x, y = cifar_like(REFERENCE_IMAGES)
    augment = transforms.Compose([transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(),
                                  transforms.ToTensor(), transforms.Normalize(MEAN, STD)])
    loader = DataLoader(_PIL(x, y, augment), batch_size=BATCH, shuffle=True, drop_last=True, num_workers=workers,
                        persistent_workers=workers > 0, pin_memory=device.type == "cuda",
                        generator=torch.Generator().manual_seed(0))
    batches: Iterator = itertools.chain.from_iterable(iter(loader) for _ in itertools.count())
    model = build_model(model_name, CLASSES, SHAPE, seed=0).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=rec.lr, momentum=rec.momentum, nesterov=rec.nesterov,
                                weight_decay=rec.weight_decay)

    def run() -> float:
        model.train()
        t0 = time.perf_counter()
        for _ in range(steps):
            xb, yb = next(batches)
            loss = F.cross_entropy(model(xb.to(device, non_blocking=True)), yb.to(device, non_blocking=True))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        loss.item()  # wait for the device
        return steps * BATCH / (time.perf_counter() - t0)

    return run


def compare(model_name: str, device: torch.device, *, threads: int, rounds: int, steps: int,
            bf16: bool = False) -> dict[str, Any]:
    """Images per second of ours and of the reference (and of ours in bf16), alternated round by round."""
    makes = {"ours": functools.partial(ours, model_name, device, steps),
             "reference": functools.partial(reference, model_name, device, steps, reference_workers(threads))}
    if bf16:
        makes["ours_bf16"] = functools.partial(ours, model_name, device, steps, precision="bf16")
    with isolated(makes, threads) as sides:
        ips = alternate(sides, rounds)
    out = {f"{k}_images_per_s": statistics.median(v) for k, v in ips.items()}
    out["speedup"] = ratio(ips["ours"], ips["reference"])
    if bf16:
        out["bf16_speedup"] = ratio(ips["ours_bf16"], ips["reference"])
    out["reference_workers"] = reference_workers(threads)
    return out


def mask_overhead(model_name: str, device: torch.device, *, threads: int, rounds: int, steps: int) -> float:
    """Time of the masked static step over the same step without the mask's work (1.0: free)."""
    makes = {"masked": functools.partial(ours, model_name, device, steps),
             "unmasked": functools.partial(ours, model_name, device, steps, topology="bench-unmasked")}
    with isolated(makes, threads) as sides:
        ips = alternate(sides, rounds)
    return ratio(ips["unmasked"], ips["masked"])


def mask_hook_seconds(model_name: str, device: torch.device, calls: int = 50) -> float:
    """The static mask's own work in a step (masking gradients, weights and momentum), timed alone:
    far below what the alternated comparison above can resolve on a shared machine."""
    model = build_model(model_name, CLASSES, SHAPE, seed=0).to(device)
    if recipe().uses_channels_last(device):
        model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    optimizer.step()  # creates the momentum buffers the mask also zeroes
    topo = Topology(model, random_mask(model, 0.1), optimizer, Schedule(1, 1, seeded_generator(0)))
    seconds = []
    for _ in range(calls):
        t0 = time.perf_counter()
        topo.before_step(0)
        topo.after_step(0)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds.append(time.perf_counter() - t0)
    return statistics.median(seconds)


def sensitivity_fraction(model_name: str, device: torch.device) -> Callable[[], float]:
    """A call runs `sensitivity.curve` at one further-pruning fraction, on CIFAR-sized random data, as a
    sensitivity job does at each of its fractions; returns its seconds."""
    from sparsenets.sensitivity import curve

    keep_freed_memory()
    x, y = cifar_like(CIFAR_TEST + 20 * 512, seed=2)  # the test set, and the recalibration's 20 batches of 512
    ds = data.Dataset(x[CIFAR_TEST:], y[CIFAR_TEST:], x[:CIFAR_TEST], y[:CIFAR_TEST], [str(c) for c in range(CLASSES)])
    model = build_model(model_name, CLASSES, SHAPE, seed=0)
    mask = random_mask(model, 0.1)
    mask.apply(model)

    def run() -> float:
        t0 = time.perf_counter()
        curve(model, mask, ds, [0.5], generator=seeded_generator(0), device=device)
        return time.perf_counter() - t0

    return run


def evaluation(model_name: str, device: torch.device, batches: int) -> Callable[[], float]:
    """A call evaluates `batches` test batches with `evaluate` and returns images per second."""
    keep_freed_memory()
    rec = recipe()
    x, y = cifar_like(batches * BATCH, seed=1)
    model = build_model(model_name, CLASSES, SHAPE, seed=0).to(device)
    if rec.uses_channels_last(device):
        model.to(memory_format=torch.channels_last)
    test = data.DeviceLoader(x, y, batch_size=BATCH, device=device, mean=MEAN, std=STD, train=False, seed=0)

    def run() -> float:
        t0 = time.perf_counter()
        evaluate(model, test, rec.uses_bf16(device))
        return batches * BATCH / (time.perf_counter() - t0)

    return run
