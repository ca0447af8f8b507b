"""How many jobs a preset runs, and roughly how many GPU- and CPU-hours its training takes.

Job counts are the grid's (`sparsenets.study.expand`, the jobs the workflow's rules look up; a test checks
them against Snakemake's dry run). Hours are per-epoch cost x epochs x training runs: the CPU cost is
measured here and now, the GPU cost is an assumption (`GPU_IMAGES_PER_S`). Mask and sensitivity
jobs are left out: each takes minutes where a training run takes hours.
"""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import yaml
from torch.nn import functional as F

from . import study as grid
from .models import build_model
from .optim import SGD

# Training images per second on one A100 (bf16 autocast and channels_last, as recipes use on CUDA;
# batch 128, 32x32 RGB). ASSUMED, not measured: scaled from public CIFAR timings of these networks
# (about 6 s per ResNet-18 epoch); small nets are bound by kernel launches, not FLOPs. Smaller images
# than 32x32 make these figures an upper bound.
GPU_IMAGES_PER_S = {
    "mlp": 100_000, "convnet": 40_000, "resnet20": 25_000,
    "vgg19": 10_000, "vgg19-nobn": 11_000, "resnet18": 8_000,
}
EVAL_SPEEDUP = 3  # a test image costs a forward pass, about a third of a training step (3-4x on CPU here)

# (train images, test images, input shape, classes) of what `sparsenets.data.prepare` writes.
DATASET_SIZES = {
    "cifar10": (50_000, 10_000, (3, 32, 32), 10),
    "cifar100": (50_000, 10_000, (3, 32, 32), 100),
    "mnist": (60_000, 10_000, (1, 28, 28), 10),
    "digits": (1_438, 359, (1, 8, 8), 10),
    "synthetic": (2_000, 500, (3, 16, 16), 10),
}

KINDS = {"mask": "masks", "imp_mask": "IMP masks", "mask_layer_matched": "matched masks", "train": "training",
         "train_dense": "dense", "train_reinit": "reinit", "sensitivity": "sensitivity"}
TRAINING = grid.TRAINING


@dataclass(frozen=True)
class EpochCost:
    """Seconds per epoch (a training pass and a test pass) of one network on one dataset."""

    dataset: str
    model: str
    cpu: float
    gpu: float


@dataclass(frozen=True)
class StudyPlan:
    """One study of a preset: its jobs per kind (= Snakemake rule), and what an epoch costs on each of its networks."""

    study: str
    jobs: dict[str, int]  # kind of job (the rule that runs it) -> jobs
    epochs: int
    costs: list[EpochCost]  # one per (dataset, model) of the study

    def hours(self, device: str) -> float:
        """Training runs are a product over datasets and models (sparsenets.study), so each pair gets an equal share."""
        runs = sum(self.jobs.get(rule, 0) for rule in TRAINING) / len(self.costs)
        return runs * self.epochs * sum(getattr(c, device) for c in self.costs) / 3600


def measure_cpu(model: str, dataset: str, batch: int = 128, steps: int = 2) -> tuple[float, float]:
    """Training and test images per second on the CPU, at the current torch thread count."""
    _, _, shape, classes = dataset_facts(dataset)
    gen = torch.Generator().manual_seed(0)
    net = build_model(model, classes, shape, seed=0)
    x, y = torch.randn(batch, *shape, generator=gen), torch.randint(classes, (batch,), generator=gen)
    optimizer = SGD(net.parameters(), lr=0.01, momentum=0.9)

    def train_step() -> None:
        optimizer.zero_grad()
        F.cross_entropy(net(x), y).backward()
        optimizer.step()

    @torch.no_grad()
    def test_step() -> None:
        net(x)

    train = _throughput(train_step, batch, steps)
    net.eval()
    return train, _throughput(test_step, batch, steps)


def _throughput(step: Callable[[], None], batch: int, steps: int) -> float:
    step()  # warm-up: allocations and lazy initialisation
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return batch * steps / (time.perf_counter() - t0)


def dataset_facts(name: str) -> tuple[int, int, tuple[int, int, int], int]:
    """Sizes known without the data: a plan comes before any download."""
    if name not in DATASET_SIZES:
        raise ValueError(f"no size known for dataset {name!r}; known: {', '.join(DATASET_SIZES)}")
    return DATASET_SIZES[name]


def epoch_cost(dataset: str, model: str, recipe: dict) -> EpochCost:
    """One epoch as a recipe runs it (its training subset and batch size) on the CPU and on a GPU."""
    gpu = GPU_IMAGES_PER_S.get(model)
    if gpu is None:
        raise ValueError(f"no assumed GPU throughput for model {model!r}; add it to GPU_IMAGES_PER_S")
    n_train, n_test, _, _ = dataset_facts(dataset)
    n_train = min(n_train, recipe.get("train_subset") or n_train)
    cpu_train, cpu_test = measure_cpu(model, dataset, batch=recipe.get("batch_size", 128))
    return EpochCost(dataset, model, cpu=n_train / cpu_train + n_test / cpu_test,
                     gpu=n_train / gpu + n_test / (EVAL_SPEEDUP * gpu))


def plan(preset: str | None = None, configfile: str | Path = "config.yaml") -> tuple[str, list[StudyPlan]]:
    """The preset (the config's own by default) and, per study, its jobs and per-epoch costs."""
    config = yaml.safe_load(Path(configfile).read_text())
    preset, _ = grid.preset_of(config, preset)
    jobs = grid.expand(config, preset)
    plans = []
    for study in grid.studies(config, preset):
        counts = Counter(j.kind for j in jobs if j.study == study.name)
        costs = [epoch_cost(d, m, study.recipe) for d in study.spec["datasets"] for m in study.spec["models"]]
        plans.append(StudyPlan(study.name, dict(counts), study.recipe["epochs"], costs))
    return preset, plans


def format_plan(preset: str, plans: list[StudyPlan]) -> str:
    """A table of jobs and hours per study, then the per-epoch costs the hours come from."""
    header = f"{'study':<16}" + "".join(f"{k:>13}" for k in KINDS.values()) + f"{'GPU-hours':>13}{'CPU-hours':>13}"
    rows = [f"{p.study:<16}" + "".join(f"{p.jobs.get(rule, 0):>13}" for rule in KINDS)
            + f"{_hours(p.hours('gpu')):>13}{_hours(p.hours('cpu')):>13}" for p in plans]
    costs = [f"  {c.dataset}/{c.model}: {c.cpu:.1f} s on the CPU (measured now), {c.gpu:.2f} s on an A100 "
             "(assumed)" for p in plans for c in p.costs]
    return "\n".join([
        f"preset {preset}: jobs per kind, and hours of training (epochs x runs x seconds per epoch)",
        header, *rows, "", "seconds per epoch (a training pass and a test pass):", *costs, "",
        f"CPU-hours are core-hours at {torch.get_num_threads()} thread(s) per job; GPU-hours assume one A100 per "
        "job (sparsenets.plan.GPU_IMAGES_PER_S); mask and sensitivity jobs are left out (minutes each).",
    ])


def _hours(h: float) -> str:
    return f"{h:,.0f}" if h >= 100 else f"{h:.2g}"
