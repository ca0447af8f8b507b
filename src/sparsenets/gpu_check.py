"""`make gpu-check`: how many training runs share one GPU well, measured on the GPU at hand.

For each paper network (VGG-19, ResNet-20, ResNet-18 at batch 128, CIFAR-10's shape) it trains one epoch in
1, 2, 4 and 8 processes at once on one device, with the training loop the pipeline uses (`sparsenets.train`:
bf16 autocast, channels_last, a static mask at density 0.05), and checks that every pruned weight stays
exactly zero and every loss is finite. It prints one JSON document: images per second per configuration
(all processes together) and the runs per GPU it recommends per network, the `runs_per_gpu` of config.yaml.
Without CUDA it says it skipped and exits 0; `--device cpu` runs the same path on the CPU (for tests).

`--slice` (with data/cifar10.npz) also trains the full 160-epoch recipe on ResNet-20 for PHEW, SynFlow-L2
and random at density 0.01801, three processes packed on the one GPU, and prints their final accuracies.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

MODELS = ("vgg19", "resnet20", "resnet18")
RUNS = (1, 2, 4, 8)
GAIN = 1.10  # packing more runs must buy at least 10 % more images per second to be recommended
SLICE_METHODS = ("phew", "synflow-l2", "random")
SLICE_DENSITY = 0.01801


def worker(spec: dict[str, Any]) -> dict[str, Any]:
    """One process: train one epoch of `spec["model"]` under a random mask; its images/s and the checks."""
    from .data import DeviceLoader
    from .masks import Mask, prunable
    from .models import build_model
    from .train import Recipe, train

    device = torch.device(spec["device"])
    gen = torch.Generator().manual_seed(spec["seed"])
    n, batch = spec["images"], spec["batch_size"]
    x = torch.randint(0, 256, (n, 32, 32, 3), generator=gen, dtype=torch.uint8).numpy()
    y = torch.randint(0, 10, (n,), generator=gen).numpy()
    args = dict(batch_size=batch, device=device, mean=(0.5,) * 3, std=(0.25,) * 3, seed=spec["seed"],
                channels_last=True)
    train_loader = DeviceLoader(x, y, train=True, **args)
    test_loader = DeviceLoader(x[:batch], y[:batch], train=False, **args)
    model = build_model(spec["model"], 10, (3, 32, 32), seed=spec["seed"]).to(device)
    scores = {k: torch.rand(w.shape, generator=gen) for k, w in prunable(model).items()}
    mask = Mask.from_scores(scores, 0.05)
    recipe = Recipe(epochs=1, batch_size=batch, milestones=(), precision="bf16", channels_last="on")
    marks: dict[int, float] = {}
    last = len(train_loader)
    pruned_max = [math.nan]

    def on_step(step: int, net: torch.nn.Module) -> None:
        if step in (1, last):  # timing from the end of the first step: start-up and autotuning left out
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            marks[step] = time.perf_counter()
        if step == last:
            with torch.no_grad():
                pruned_max[0] = max(float(w.detach()[~mask[k].to(device)].abs().max()) if (~mask[k]).any() else 0.0
                                    for k, w in prunable(net).items())

    print("ready", flush=True)
    sys.stdin.readline()  # the parent starts every process of a configuration at once
    result = train(model, mask, recipe, train_loader, test_loader, generator=gen, on_step=on_step,
                   log=lambda _: None)
    loss = result.history[-1]["train_loss"]
    seconds = marks[last] - marks[1]
    memory = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else 0.0
    return {"images_per_s": (last - 1) * batch / seconds, "seconds": seconds, "train_loss": loss,
            "loss_finite": math.isfinite(loss), "pruned_max_abs": pruned_max[0], "max_memory_mib": memory}


def run_config(model: str, runs: int, device: str, images: int, batch_size: int) -> dict[str, Any]:
    """`runs` worker processes training `model` at once on `device`; their images per second together. A worker
    that fails (out of memory at 8 per GPU, say) makes the configuration's `error`, not the check's."""
    try:
        return _run_config(model, runs, device, images, batch_size)
    except RuntimeError as e:
        return {"model": model, "runs_per_gpu": runs, "images_per_s": 0.0, "per_run_images_per_s": [],
                "seconds": None, "max_memory_mib": None, "losses_finite": None, "pruned_weights_zero": None,
                "error": str(e)[-1500:]}


def _run_config(model: str, runs: int, device: str, images: int, batch_size: int) -> dict[str, Any]:
    spec = {"model": model, "device": device, "images": images, "batch_size": batch_size}
    procs = [subprocess.Popen([sys.executable, "-m", "sparsenets.gpu_check", "--worker",
                               json.dumps({**spec, "seed": i})], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(runs)]
    try:
        for proc in procs:
            if proc.stdout.readline().strip() != "ready":
                raise RuntimeError(f"gpu-check worker ({model}, {runs} per GPU) failed:\n{proc.communicate()[1]}")
        for proc in procs:
            proc.stdin.write("go\n")
            proc.stdin.flush()
        outs = [proc.communicate(timeout=1800) for proc in procs]
    finally:
        for proc in procs:
            proc.kill()
    if any(proc.returncode for proc in procs):
        raise RuntimeError(f"gpu-check worker ({model}, {runs} per GPU) failed:\n"
                           + "\n".join(err[-2000:] for proc, (_, err) in zip(procs, outs) if proc.returncode))
    results = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
    slowest = max(r["seconds"] for r in results)
    steps = images // batch_size - 1
    return {"model": model, "runs_per_gpu": runs,
            "images_per_s": round(runs * steps * batch_size / slowest, 1),  # all together, over the slowest
            "per_run_images_per_s": [round(r["images_per_s"], 1) for r in results],
            "seconds": round(slowest, 3), "max_memory_mib": round(max(r["max_memory_mib"] for r in results), 1),
            "losses_finite": all(r["loss_finite"] for r in results),
            "pruned_weights_zero": all(r["pruned_max_abs"] == 0.0 for r in results)}


def recommend(configs: list[dict[str, Any]]) -> dict[str, int]:
    """Per network: more runs per GPU only while each step up buys at least GAIN times the images per second."""
    best: dict[str, int] = {}
    for model in dict.fromkeys(c["model"] for c in configs):
        rate = 0.0
        for c in sorted((c for c in configs if c["model"] == model), key=lambda c: c["runs_per_gpu"]):
            if c.get("error") or not (c["losses_finite"] and c["pruned_weights_zero"]) \
                    or c["images_per_s"] < GAIN * rate:
                break
            best[model], rate = c["runs_per_gpu"], c["images_per_s"]
    return best


def slice_run(data: Path, device: str, epochs: int | None, configfile: str) -> dict[str, float]:
    """ResNet-20 at density 0.01801 for each SLICE_METHODS, trained at once on the one GPU: final accuracies."""
    work = Path(tempfile.mkdtemp(prefix="sparsenets-gpu-check-"))
    share = f"{device}@1/{len(SLICE_METHODS)}" if device in ("auto", "cuda") else device
    code = "import sys; from sparsenets.gpu_check import slice_worker; print(slice_worker(*sys.argv[1:]))"
    args = [str(data), str(work), share, str(epochs or 0), configfile]
    procs = {m: subprocess.Popen([sys.executable, "-c", code, m, *args],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 env={**os.environ, "SPARSENETS_GPU_LOCK_DIR": str(work / "locks"),
                                      "CUDA_VISIBLE_DEVICES": _first_gpu()})
             for m in SLICE_METHODS}
    accuracies = {}
    try:
        for method, proc in procs.items():
            out, err = proc.communicate()
            if proc.returncode:
                raise RuntimeError(f"gpu-check slice run {method} failed:\n{err[-3000:]}")
            accuracies[method] = float(out.strip().splitlines()[-1])
    finally:
        for proc in procs.values():  # one failed: the others stop too
            proc.kill()
        shutil.rmtree(work, ignore_errors=True)
    return accuracies


def _first_gpu() -> str:
    """The one GPU the slice packs its runs on (the first visible): its slots would spread them over several."""
    return os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0]


def slice_worker(method: str, data: str, work: str, device: str, epochs: str, configfile: str) -> float:
    """One paper run: its mask, then the cifar-160 recipe (or its first `epochs`), untracked; its final accuracy."""
    import yaml

    from .experiments import make_mask, run_training
    from .study import Run
    from .train import Recipe

    config = yaml.safe_load(Path(configfile).read_text())
    recipe = dict(config["recipes"]["cifar-160"])
    if int(epochs):
        recipe["epochs"] = int(epochs)
    run = Run("cifar10", "resnet20", method, SLICE_DENSITY, 0, study="gpu-check")
    mask = Path(work) / f"{method}.pt"
    make_mask("resnet20", data, method, SLICE_DENSITY, 0, mask, device=device)
    result = run_training(run, Recipe.from_dict(recipe), data_file=data, mask_file=mask,
                          out_dir=Path(work) / method, device=device, log=lambda _: None)
    return result.final["test_acc"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sparsenets.gpu_check", description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", help="cuda (default), or cpu to run the same path without a GPU")
    p.add_argument("--models", nargs="+", default=list(MODELS))
    p.add_argument("--runs", nargs="+", type=int, default=list(RUNS), help="processes per GPU to try")
    p.add_argument("--images", type=int, default=50_000, help="training images of the one epoch (CIFAR-10's)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--slice", action="store_true", help="also train 3 paper runs of ResNet-20 packed on the GPU")
    p.add_argument("--data", default="data/cifar10.npz", help="CIFAR-10 for --slice")
    p.add_argument("--slice-epochs", type=int, help="train the slice for this many epochs, not the recipe's 160")
    p.add_argument("--configfile", default="config.yaml", help="where --slice finds the cifar-160 recipe")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        print(json.dumps(worker(json.loads(a.worker))), flush=True)
        return 0
    if a.device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu-check skipped: no CUDA device here (torch.cuda.is_available() is False); nothing measured",
              flush=True)
        return 0
    if a.slice and not Path(a.data).exists():
        p.error(f"--slice needs {a.data}: CIFAR-10 as npz (README, Datasets offline), or give --data")
    if a.images < 3 * a.batch_size:
        p.error(f"--images {a.images}: at least 3 batches of {a.batch_size} are needed to time an epoch")
    dev = torch.device(a.device)
    configs = [run_config(m, r, a.device, a.images, a.batch_size) for m in a.models for r in a.runs]
    report = {"device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu", "torch": torch.__version__,
              "precision": "bf16", "channels_last": True, "batch_size": a.batch_size, "images": a.images,
              "configs": configs, "recommended_runs_per_gpu": recommend(configs)}
    errors = [f"{c['model']} at {c['runs_per_gpu']} per GPU: {c['error']}" for c in configs if c.get("error")]
    if errors:
        print("gpu-check: some configurations did not run:\n" + "\n".join(errors), file=sys.stderr)
    if a.slice:
        t0 = time.perf_counter()
        accuracies = slice_run(Path(a.data), a.device, a.slice_epochs, a.configfile)
        report["slice"] = {"model": "resnet20", "density": SLICE_DENSITY, "final_test_acc": accuracies,
                           "seconds": round(time.perf_counter() - t0, 1)}
    print(json.dumps(report, indent=1), flush=True)
    failed = [f"{c['model']} at {c['runs_per_gpu']} per GPU" for c in configs
              if c["losses_finite"] is False or c["pruned_weights_zero"] is False]
    if failed:
        print(f"gpu-check FAILED: a pruned weight moved or a loss was not finite in {', '.join(failed)}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
