"""The one mask type: a bool tensor per prunable weight (every Conv2d and Linear weight).

A mask file carries the metadata that defines it (model, method, density, seed, ...) and the shape
of every tensor, so loading it against the wrong model is an error that names both.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator, Mapping

import torch
from torch import Tensor, nn

from .io import atomic_path


def prunable(model: nn.Module) -> dict[str, nn.Parameter]:
    """The weights we prune, by parameter name, in module order: Conv2d and Linear weights."""
    return {
        f"{name}.weight" if name else "weight": m.weight
        for name, m in model.named_modules()
        if isinstance(m, (nn.Conv2d, nn.Linear))
    }


class Mask(Mapping[str, Tensor]):
    """An immutable-by-convention mapping from prunable-weight name to a bool tensor."""

    def __init__(self, tensors: Mapping[str, Tensor], meta: Mapping[str, Any] | None = None) -> None:
        self._t = {k: v.to(torch.bool) for k, v in tensors.items()}
        self.meta: dict[str, Any] = dict(meta or {})

    # Mapping protocol
    def __getitem__(self, key: str) -> Tensor:
        return self._t[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._t)

    def __len__(self) -> int:
        return len(self._t)

    def __repr__(self) -> str:
        return f"Mask({len(self)} tensors, density={self.density:.4f})"

    # construction
    @classmethod
    def ones(cls, model: nn.Module) -> "Mask":
        return cls({k: torch.ones_like(w, dtype=torch.bool) for k, w in prunable(model).items()})

    @classmethod
    def from_scores(cls, scores: Mapping[str, Tensor], density: float) -> "Mask":
        """Keep exactly round(density * total) entries with the highest scores, globally."""
        check_density(density)
        return cls.top(scores, keep_count(density, sum(s.numel() for s in scores.values())))

    @classmethod
    def top(cls, scores: Mapping[str, Tensor], k: int) -> "Mask":
        """Keep the `k` highest scores, globally."""
        flat = torch.cat([s.detach().flatten().to(torch.float64) for s in scores.values()])
        keep = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
        if k > 0:
            # a stable sort breaks ties by position, so the result is deterministic
            order = torch.sort(flat, descending=True, stable=True).indices
            keep[order[:k]] = True
        return cls(_unflatten(keep, scores))

    @classmethod
    def from_layer_scores(cls, scores: Mapping[str, Tensor], densities: Mapping[str, float]) -> "Mask":
        """Keep the top round(d_l * n_l) scores within each layer l."""
        out = {}
        for name, s in scores.items():
            flat = s.detach().flatten().to(torch.float64)
            k = keep_count(densities[name], flat.numel())
            keep = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
            keep[torch.sort(flat, descending=True, stable=True).indices[:k]] = True
            out[name] = keep.view_as(s)
        return cls(out)

    # statistics
    @property
    def kept(self) -> int:
        return int(sum(int(m.sum()) for m in self._t.values()))

    @property
    def total(self) -> int:
        return int(sum(m.numel() for m in self._t.values()))

    @property
    def density(self) -> float:
        return self.kept / self.total if self.total else 0.0

    def layer_density(self) -> dict[str, float]:
        return {k: float(m.float().mean()) for k, m in self._t.items()}

    # use
    def to(self, device: torch.device | str) -> "Mask":
        return Mask({k: v.to(device) for k, v in self._t.items()}, self.meta)

    def check_model(self, model: nn.Module, source: str = "mask", target: str = "this model") -> None:
        """Raise a clear error if this mask does not fit `model`'s prunable weights (`target` names it)."""
        weights = prunable(model)
        built_for = self.meta.get("model", "another model")
        if set(weights) != set(self._t):
            missing = sorted(set(weights) ^ set(self._t))[:3]
            raise ValueError(f"{source} was built for {built_for} and does not fit {target} (tensor names differ: {missing})")
        for k, w in weights.items():
            if tuple(w.shape) != tuple(self._t[k].shape):
                raise ValueError(
                    f"{source} was built for {built_for} and does not fit {target}: "
                    f"{k} has shape {tuple(self._t[k].shape)} in the mask, {tuple(w.shape)} in the model"
                )

    @torch.no_grad()
    def apply(self, model: nn.Module) -> None:
        """Zero the pruned weights of `model` in place."""
        weights = prunable(model)
        names = list(self._t)
        torch._foreach_mul_([weights[k] for k in names], [self._t[k].to(weights[k].dtype) for k in names])

    def save(self, path: str | os.PathLike) -> None:
        atomic_save({"masks": {k: v.cpu() for k, v in self._t.items()}, "meta": self.meta}, path)

    @classmethod
    def load(cls, path: str | os.PathLike, model: nn.Module | None = None) -> "Mask":
        from .readers import KINDS, damaged, expect, load_torch

        path = Path(path)
        blob = expect(path, "mask file", load_torch(path, "mask file"), KINDS["mask"][1],
                      "a torch file, but not a mask: no 'masks' entry", "mask")
        try:
            mask = cls(blob["masks"], blob.get("meta", {}))
        except Exception as e:  # noqa: BLE001 - any malformed mask gets one clear message
            raise damaged(path, "mask file", f"{type(e).__name__}: {e}") from e
        if model is not None:
            mask.check_model(model, source=f"mask file {path}")
        return mask


def check_density(density: float) -> None:
    if not (0.0 < float(density) <= 1.0):
        raise ValueError(f"density must be in (0, 1], got {density}")


def keep_count(density: float, total: int) -> int:
    """The number of weights a density keeps: the one rounding rule every method uses."""
    return int(round(float(density) * total))


def _unflatten(flat: Tensor, like: Mapping[str, Tensor]) -> dict[str, Tensor]:
    out, i = {}, 0
    for k, t in like.items():
        out[k] = flat[i : i + t.numel()].view(t.shape)
        i += t.numel()
    return out


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """torch.save, whole or not at all (io.atomic_path): two saves of the same object give the same bytes.
    Saved through a Python file, whose OSError (ENOSPC: a full disk) torch keeps as the cause of its own error;
    saving to a path, it drops the errno."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)
