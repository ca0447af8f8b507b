"""What we measure on a mask, without training: densities, widths, in-degrees, the path-kernel trace
and the overlap of two masks (as PHEW defines width and the path-kernel trace).

A unit is alive for widths when some kept weight feeds it and some kept weight reads it; a unit's
readers include the layers it reaches through identity shortcuts (see graph.py), and the output
layer's units are read by the loss. `StructureRecorder` follows a dynamic run's mask epoch by epoch.
"""
from __future__ import annotations

import copy
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from .graph import UnitGraph, unit_graph
from .masks import Mask, atomic_save, prunable


def in_degrees(mask: Mask) -> dict[str, tuple[Tensor, Tensor]]:
    """Per unit of every layer: kept incoming kernel elements, and input channels with any kept element."""
    out = {}
    for name, m in mask.items():
        m = m.reshape(m.shape[0], m.shape[1], -1)
        out[name] = (m.sum((1, 2)), m.any(2).sum(1))
    return out


def layer_table(model: nn.Module, mask: Mask, input_shape: Sequence[int]) -> list[dict[str, Any]]:
    """One row per prunable layer: sizes, density, widths and in-degree summaries."""
    mask.check_model(model)
    graph = unit_graph(model, input_shape)
    read = {k: m.transpose(0, 1).flatten(1).any(1) for k, m in mask.items()}  # inputs some kept weight reads
    degrees = in_degrees(mask)
    rows = []
    for name, m in mask.items():
        elements, channels = degrees[name]
        fed = elements > 0
        alive = fed & _read_units(graph, name, read)
        units, width = m.shape[0], int(alive.sum())
        rows.append({
            "layer": name,
            "shape": "x".join(map(str, m.shape)),
            "kept": int(m.sum()),
            "total": m.numel(),
            "density": float(m.float().mean()),
            "units": units,
            "width": width,
            "in_width": int(fed.sum()),
            "width_ratio": width / units,
            "dead": units - width,
            "in_deg_mean": float(elements.float().mean()),
            "in_deg_median": float(elements.float().median()),
            "in_deg_max": int(elements.max()),
            "in_ch_mean": float(channels.float().mean()),
            "in_ch_max": int(channels.max()),
        })
    return rows


def _read_units(graph: UnitGraph, layer: str, read: dict[str, Tensor]) -> Tensor:
    """Units of `layer` that some kept weight reads, identity shortcuts included."""
    if layer == graph.output:
        return torch.ones(graph.units[layer], dtype=torch.bool, device=read[layer].device)
    out = torch.zeros(graph.units[layer], dtype=torch.bool, device=read[layer].device)
    for e in graph.consumers(layer):
        out |= read[e.dst].view(-1, e.spread).any(1)
    return out


def summary(model: nn.Module, mask: Mask, input_shape: Sequence[int]) -> dict[str, Any]:
    """The mask's totals: density, the narrowest layer, dead units and the path-kernel trace."""
    rows = layer_table(model, mask, input_shape)
    narrowest = min(rows, key=lambda r: r["width_ratio"])
    return {
        "kept": mask.kept,
        "total": mask.total,
        "density": mask.density,
        "units": sum(r["units"] for r in rows),
        "width": sum(r["width"] for r in rows),
        "dead": sum(r["dead"] for r in rows),
        "min_width_ratio": narrowest["width_ratio"],
        "min_width_layer": narrowest["layer"],
        "path_kernel_trace": path_kernel_trace(model, mask, input_shape),
    }


def path_kernel_trace(model: nn.Module, mask: Mask, input_shape: Sequence[int]) -> float:
    """Tr(Pi) = sum over kept weights of dR/dphi, R the summed output of the masked net whose every
    parameter theta is replaced by phi = theta^2, on an all-ones input, BN in eval mode, in float64.
    Like the reference code we sum over weights only (not biases or BN)."""
    mask.check_model(model)
    net = copy.deepcopy(model).to(torch.float64).eval()
    device = next(net.parameters()).device
    mask = mask.to(device)
    with torch.no_grad():
        for p in net.parameters():
            p.square_()
            p.requires_grad_(False)
        mask.apply(net)
    weights = prunable(net)
    for w in weights.values():
        w.requires_grad_(True)
    net(torch.ones(1, *input_shape, dtype=torch.float64, device=device)).sum().backward()
    return float(sum((w.grad * mask[k]).sum() for k, w in weights.items()))


def overlap(a: Mask, b: Mask) -> dict[str, float]:
    """How much of `a` `b` keeps too (|A and B| / |A|), and the Jaccard index |A and B| / |A or B|."""
    if set(a) != set(b):
        raise ValueError(f"masks have different tensors: {sorted(set(a) ^ set(b))[:3]}")
    both = either = 0
    for k in a:
        if a[k].shape != b[k].shape:
            raise ValueError(f"masks disagree on the shape of {k}: {tuple(a[k].shape)} vs {tuple(b[k].shape)}")
        bk = b[k].to(a[k].device)
        both += int((a[k] & bk).sum())
        either += int((a[k] | bk).sum())
    return {
        "kept_a": a.kept,
        "kept_b": b.kept,
        "shared": both,
        "overlap": both / a.kept if a.kept else 0.0,
        "jaccard": both / either if either else 0.0,
    }


class StructureRecorder:
    """Per-epoch structure of a dynamic run: in-degrees, overlap with the previous and the final mask.

    Its state lives in the checkpoint's extra state, and each epoch's mask is saved bit-packed, so a
    resumed run keeps its whole record. A resumed run checks those files first (`set_aside_damaged`).
    """

    def __init__(self, folder: Path, state: dict[str, Any]) -> None:
        self.folder, self.state = folder, state
        state.setdefault("records", [])

    def record(self, epoch: int, mask: Mask) -> float:
        prev = self._load(epoch - 1)
        ov = overlap(prev, mask)["overlap"] if prev is not None else float("nan")
        degrees = {k: [v.tolist() for v in pair] for k, pair in in_degrees(mask).items()}
        self.state["records"].append({"epoch": epoch, "overlap_prev": ov, "in_degree": degrees})
        self._save(epoch, mask)
        return ov

    def finish(self, final: Mask) -> list[dict[str, Any]]:
        for rec in self.state["records"]:
            rec["overlap_final"] = overlap(self._load(rec["epoch"]), final)["overlap"]
        return self.state["records"]

    def discard(self) -> None:
        """Remove the epoch masks (large at paper scale; the record says it all) once the run's checkpoint is
        gone: a job killed before that resumes from its last checkpoint and needs every one of them again.
        Damaged ones set aside stay, for a post-mortem (as damaged checkpoints do)."""
        if not list(self.folder.glob("*.damaged")):
            shutil.rmtree(self.folder, ignore_errors=True)
            return
        for f in self.folder.iterdir():
            if f.suffix != ".damaged":
                f.unlink()

    def set_aside_damaged(self, log: Callable[[str], None]) -> tuple[int | None, list[Path]]:
        """Before a resumed run goes on: move every epoch mask that does not load aside (`e0003.pt.damaged`),
        naming it in the log. Returns the first epoch whose mask is now missing below the newest one, if any
        (a checkpoint taken after it cannot go on: the run goes on from one before it, or from scratch),
        and the files set aside."""
        epochs, aside = set(), []
        for f in sorted(self.folder.glob("e*.pt")):
            try:
                self._read(f)
                epochs.add(int(f.stem[1:]))
            except Exception as e:  # noqa: BLE001 - truncated, zeroed or foreign: all are damaged
                aside.append(Path(f"{f}.damaged"))
                os.replace(f, aside[-1])
                log(f"damaged epoch mask {f} ({type(e).__name__}: {str(e).strip()[:200]}): moved it aside to "
                    f"{aside[-1]}; going on from a checkpoint taken before that epoch ended, or from scratch")
        newest = max([*epochs, *(int(f.name[1:5]) for f in aside)], default=-1)
        return next((e for e in range(newest + 1) if e not in epochs), None), aside

    def _save(self, epoch: int, mask: Mask) -> None:
        packed = {k: np.packbits(v.cpu().numpy().ravel()) for k, v in mask.items()}
        atomic_save({"packed": packed, "shapes": {k: tuple(v.shape) for k, v in mask.items()}},
                    self.folder / f"e{epoch:04d}.pt")

    def _load(self, epoch: int) -> Mask | None:
        path = self.folder / f"e{epoch:04d}.pt"
        return self._read(path) if path.exists() else None

    @staticmethod
    def _read(path: Path) -> Mask:
        blob = torch.load(path, weights_only=False)
        return Mask({k: torch.from_numpy(np.unpackbits(p)[: int(np.prod(blob["shapes"][k]))].reshape(blob["shapes"][k])
                                         .astype(bool)) for k, p in blob["packed"].items()})


def format_table(rows: list[dict[str, Any]], totals: dict[str, Any]) -> str:
    """An aligned text table of `rows` (text left, numbers right), then the totals one per line."""
    columns = list(rows[0]) if rows else []
    cells = [columns] + [[_cell(r[c]) for c in columns] for r in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    text = [isinstance(rows[0][c], str) for c in columns] if rows else []
    lines = [
        "  ".join(s.ljust(w) if left else s.rjust(w) for s, w, left in zip(line, widths, text)).rstrip()
        for line in cells
    ]
    key_width = max(map(len, totals), default=0)
    lines += [""] + [f"{k.ljust(key_width)}  {_cell(v)}" for k, v in totals.items()]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
