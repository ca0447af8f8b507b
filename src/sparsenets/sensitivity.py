"""Further pruning of a trained run (Deconstructing Fig. 2): remove a fraction of the weights it kept,
smallest magnitude first or at random, and measure test accuracy with no retraining.

The paper leaves two choices open, so one job computes every reading of them (claims C5 and C5b are
judged under each): the removal ranks the kept weights globally or removes the same fraction within each
layer (`RANKINGS`), and BN running statistics, which describe the unpruned net, are either kept (stale)
or re-estimated on training batches. The model, data and unpruned point (f = 0) are loaded and
evaluated once for all readings.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import os
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from . import data
from .devices import claim_device
from .masks import Mask, keep_count, prunable
from .models import build_model
from .readers import damaged, load_torch, read_json
from .train import evaluate, prefers_channels_last, seeded_generator, uses_bf16

MODES = ("magnitude", "random")
RANKINGS = ("global", "layer")  # one ranking over every layer's kept weights, or the same fraction within each layer
RECAL_SEED = 0  # recalibration always sees the same training batches
RECAL_IMAGES = 2048  # BN statistics per channel average over 2,048 images x positions: plenty, and 5x cheaper than 10k


def curve(model: nn.Module, mask: Mask, ds: data.Dataset, fractions: Sequence[float], *,
          generator: torch.Generator, device: torch.device | str, batch_size: int = 512,
          recal_images: int = RECAL_IMAGES, bf16: bool = False) -> list[dict[str, Any]]:
    """Test accuracy after removing each further fraction of the kept weights, per mode and ranking, with stale
    and with recalibrated BN statistics (re-estimated on `recal_images` training images). f = 0 removes nothing
    whatever the mode and ranking: it is evaluated once and reported for each. `model` holds the run's (masked)
    weights and is left untouched; `bf16` evaluates under bf16 autocast, as its run trained."""
    bad = [f for f in fractions if not 0.0 <= f < 1.0]
    if bad:
        raise ValueError(f"further-pruning fractions must be in [0, 1), got {bad}")
    net = copy.deepcopy(model).to(device)
    if prefers_channels_last(torch.device(device)):  # as training runs
        net.to(memory_format=torch.channels_last)
    mask = mask.to(device)
    mask.check_model(net)
    trained = copy.deepcopy(net.state_dict())
    loader_args = dict(device=device, mean=ds.mean, std=ds.std)
    test = data.DeviceLoader(ds.x_test, ds.y_test, batch_size=batch_size, train=False, seed=0, **loader_args)
    recal = data.DeviceLoader(ds.x_train, ds.y_train, batch_size=min(batch_size, len(ds.y_train)), train=True,
                              seed=RECAL_SEED, augment=False, **loader_args)
    batches = math.ceil(recal_images / recal.batch_size)

    def measure(pruned: Mask) -> list[tuple[bool, float, float]]:
        net.load_state_dict(trained)
        pruned.apply(net)
        out = []
        for recalibrated in (False, True):
            if recalibrated:
                recalibrate_bn(net, recal, batches, bf16)
            out.append((recalibrated, *evaluate(net, test, bf16)))
        return out

    unpruned = measure(mask) if 0.0 in fractions else []
    rows = []
    for mode in MODES:
        net.load_state_dict(trained)  # magnitudes of the trained weights, whatever ran before
        scores = _scores(net, mask, mode, generator)
        for ranking in RANKINGS:
            for fraction, pruned in zip(fractions, further_masks(mask, scores, fractions, ranking)):
                for recalibrated, test_loss, test_acc in (unpruned if fraction == 0 else measure(pruned)):
                    rows.append({"mode": mode, "ranking": ranking, "bn_recalibrated": recalibrated,
                                 "fraction": float(fraction), "test_acc": test_acc, "test_loss": test_loss,
                                 "kept": pruned.kept})
    return rows


def _scores(model: nn.Module, mask: Mask, mode: str, generator: torch.Generator) -> dict[str, Tensor]:
    """What survives further pruning longest: the largest |w|, or a uniform draw; pruned weights rank last."""
    if mode not in MODES:
        raise ValueError(f"unknown further-pruning mode {mode!r}; known: {', '.join(MODES)}")
    weights = prunable(model)
    out = {}
    for name, m in mask.items():
        if mode == "magnitude":
            s = weights[name].detach().abs().double()
        else:
            s = torch.rand(m.shape, generator=generator, dtype=torch.float64, device=generator.device).to(m.device)
        out[name] = s.masked_fill(~m, float("-inf"))
    return out


def further_masks(mask: Mask, scores: dict[str, Tensor], fractions: Sequence[float],
                  ranking: str = "global") -> Iterator[Mask]:
    """Per fraction f, the mask keeping the highest-scoring kept weights: keep_count(1 - f, kept) of them over
    all layers (ranking "global"), or keep_count(1 - f, layer's kept) within each layer ("layer"). One ranking
    serves every f, so the removed sets are nested, as in one pruning sequence."""
    if ranking not in RANKINGS:
        raise ValueError(f"unknown further-pruning ranking {ranking!r}; known: {', '.join(RANKINGS)}")
    groups = [scores] if ranking == "global" else [{k: s} for k, s in scores.items()]
    orders = []
    for group in groups:
        flat = torch.cat([s.flatten() for s in group.values()])
        kept = sum(int(mask[k].sum()) for k in group)
        orders.append((group, torch.sort(flat, descending=True, stable=True).indices, kept))
    for f in fractions:
        out = {}
        for group, order, kept in orders:
            keep = torch.zeros(order.numel(), dtype=torch.bool, device=order.device)
            keep[order[: keep_count(1.0 - f, kept)]] = True
            sizes = [s.numel() for s in group.values()]
            out.update({k: part.view(s.shape) for (k, s), part in zip(group.items(), keep.split(sizes))})
        yield Mask(out, mask.meta)


@torch.no_grad()
def recalibrate_bn(model: nn.Module, loader: data.DeviceLoader, batches: int, bf16: bool = False) -> None:
    """Re-estimate every BN layer's running statistics as the plain average over `batches` training
    batches (momentum None), so they describe the pruned net and not the one it was cut from."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    device = next(model.parameters()).device
    for _, (x, _) in zip(range(batches), loader.epoch(0)):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            model(x)
    model.eval()


def with_test_subset(ds: data.Dataset, n: int | None) -> data.Dataset:
    """`ds` with a fixed subset of `n` test images (the same for every run: a seeded draw, in the split's order, as
    recipe eval_subset draws it); None or 0 or n ≥ the split: the whole test set."""
    if not n or n >= len(ds.y_test):
        return ds
    keep = np.sort(np.random.default_rng(0).permutation(len(ds.y_test))[:n])
    return dataclasses.replace(ds, x_test=ds.x_test[keep], y_test=ds.y_test[keep])


def run_curve(run_dir: str | os.PathLike, data_file: str | os.PathLike, fractions: Sequence[float], seed: int,
              device: str = "auto", precision: str = "auto", recal_images: int = RECAL_IMAGES,
              test_images: int | None = None) -> dict[str, Any]:
    """The sensitivity curves of one finished run: {"spec": its metrics.json spec, "num_classes": its mask's
    (chance accuracy for the claims), "test_size": the test images each accuracy is measured on (`test_images` of
    them, or all; the claims' intervals include their noise), "rows": curve(...), every reading of the open
    choices}."""
    run = Path(run_dir)
    dev = claim_device(device)
    mask = Mask.load(run / "mask.pt")
    missing = [k for k in ("model", "num_classes", "input_shape") if k not in mask.meta]
    if missing:
        raise ValueError(f"mask file {run / 'mask.pt'} has no {', '.join(missing)} in its metadata")
    model = build_model(mask.meta["model"], mask.meta["num_classes"], tuple(mask.meta["input_shape"]))
    state = load_torch(run / "model.pt", "trained weights")
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as e:
        raise damaged(run / "model.pt", "trained weights", f"they do not fit {mask.meta['model']}: {e}") from None
    mask.check_model(model, source=f"mask file {run / 'mask.pt'}")
    revived = [k for k, w in prunable(model).items() if bool((w.detach()[~mask[k]] != 0).any())]
    if revived:  # e.g. DNW's dense weights saved instead of its top-k: f = 0 would not be the run
        raise ValueError(f"{run / 'model.pt'} has non-zero weights outside {run / 'mask.pt'} in {revived[:3]}")
    spec = read_json(run / "metrics.json", "run metrics", keys=("spec",))["spec"]
    if test_images is not None and test_images < 0:
        raise ValueError(f"test_images must be ≥ 0 (0: the whole test set), got {test_images}")
    ds = with_test_subset(data.load(data_file), test_images)
    rows = curve(model, mask, ds, fractions, generator=seeded_generator(seed), device=dev,
                 recal_images=recal_images, bf16=uses_bf16(precision, dev))
    return {"spec": spec, "num_classes": int(mask.meta["num_classes"]), "test_size": len(ds.y_test), "rows": rows}
