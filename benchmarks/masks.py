"""How long each pruning method takes to build one mask at paper size (CIFAR: 3x32x32, 10 classes).

Run: python benchmarks/masks.py [--device cpu] [--threads 1] [--methods snip synflow ...]
Data methods get random normalised images, which cost the same as real ones.
"""
from __future__ import annotations

import argparse
import time

import torch

from sparsenets.models import build_model
from sparsenets.pruning import PruneInputs, build_mask

METHODS = ["random", "random-erk", "magnitude", "snip", "grasp", "synflow", "synflow-l2", "phew"]
MODELS = ["vgg19", "resnet18"]
DENSITIES = [0.1, 0.018]
SHAPE, CLASSES = (3, 32, 32), 10


def fake_inputs(seed: int, device: torch.device) -> PruneInputs:
    generator = torch.Generator().manual_seed(seed)

    def batches(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.randn(n, *SHAPE, generator=generator)
        return x.to(device), torch.randint(CLASSES, (n,), generator=generator).to(device)

    return PruneInputs(generator, CLASSES, SHAPE, batches=batches)


def mask_seconds(methods: list[str], models: list[str], densities: list[float],
                 device: str | torch.device = "cpu") -> dict[str, dict[str, dict[float, float]]]:
    """Wall seconds to build each mask once: result[method][model][density]."""
    device = torch.device(device)
    out: dict[str, dict[str, dict[float, float]]] = {}
    for method in methods:
        for name in models:
            model = build_model(name, CLASSES, SHAPE, seed=0).to(device)
            for density in densities:
                inputs = fake_inputs(0, device)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                start = time.perf_counter()
                build_mask(method, model, density, inputs)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                out.setdefault(method, {}).setdefault(name, {})[density] = time.perf_counter() - start
    return out


def header(models: list[str], densities: list[float]) -> str:
    return f"{'method':<12}" + "".join(f"{f'{m}@{d:g}':>16}" for m in models for d in densities)


def row(method: str, by_model: dict[str, dict[float, float]], models: list[str], densities: list[float]) -> str:
    return f"{method:<12}" + "".join(f"{by_model[m][d]:>15.1f}s" for m in models for d in densities)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--methods", nargs="+", default=METHODS)
    parser.add_argument("--models", nargs="+", default=MODELS)
    parser.add_argument("--densities", nargs="+", type=float, default=DENSITIES)
    parser.add_argument("--threads", type=int, help="CPU threads (default: torch's); 1 is faster on a shared machine")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(header(args.models, args.densities), flush=True)
    for method in args.methods:  # a row per method, printed as soon as it is timed
        seconds = mask_seconds([method], args.models, args.densities, args.device)
        print(row(method, seconds[method], args.models, args.densities), flush=True)


if __name__ == "__main__":
    main()
