"""Reading what another job wrote: a damaged file fails the reader with its path, the rule that writes it,
and the fix (delete it; Snakemake then reruns that rule, since a missing output is always remade).

Files are written whole or not at all (`io.atomic_path`), so damage means a disk fault, a copy cut short,
or a hand edit; the reader cannot repair it, but it can say exactly what to delete. Torch is imported only
by `load_torch`, so table and figure jobs stay light.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


class DamagedFile(ValueError):
    """A file another job wrote cannot be read; the message names it, its rule and the fix."""


def producer(path: str | os.PathLike) -> str | None:
    """The Snakemake rule that writes `path`, from its place in the results tree; None outside it."""
    p = Path(path)
    parts = p.parts
    if "sensitivity" in parts:
        return "sensitivity"
    if "tables" in parts:
        return "table"
    if "masks" in parts:
        method = _after(parts, "masks", 3)
        return "imp_mask" if method == "imp" else "mask_layer_matched" if method.startswith("random-like-") else "mask"
    if "runs" in parts:
        if "prune" in parts[parts.index("runs"):]:
            return "train_prune"
        dense = _after(parts, "runs", 3) == "random" and _after(parts, "runs", 4) == "d1"
        return "train_dense" if dense or p.name == "rewind.pt" else "train"
    return None


def _after(parts: tuple[str, ...], folder: str, k: int) -> str:
    i = parts.index(folder) + k
    return parts[i] if i < len(parts) else ""


def damaged(path: str | os.PathLike, what: str, reason: str) -> DamagedFile:
    """The error for an unreadable `path` (`what`: "mask file", "run metrics", ...)."""
    rule = producer(path)
    fix = (f"it is written by rule {rule}: delete it and run snakemake again, which reruns that job "
           "(Snakemake remakes a missing output)" if rule else "replace it with a good copy")
    return DamagedFile(f"{what} {path} is damaged or not what it should be ({reason}); {fix}")


def missing(path: str | os.PathLike, what: str) -> FileNotFoundError:
    rule = producer(path)
    made = f": it is written by rule {rule}; run snakemake to make it" if rule else ""
    return FileNotFoundError(f"{what} {path} does not exist{made}")


def load_torch(path: str | os.PathLike, what: str) -> Any:
    """`torch.load` of tensors only (weights_only), with a clear error if the file is missing or damaged."""
    import torch

    if not Path(path).exists():
        raise missing(path, what)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - truncated, foreign or pickled-code files all get one message
        raise damaged(path, what, f"{type(e).__name__}: {_first_line(e)}") from e


def read_json(path: str | os.PathLike, what: str, keys: tuple[str, ...] = ()) -> Any:
    """A JSON object another job wrote, which must hold `keys`."""
    if not Path(path).exists():
        raise missing(path, what)
    try:
        obj = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise damaged(path, what, f"{type(e).__name__}: {_first_line(e)}") from e
    lacking = [k for k in keys if not isinstance(obj, dict) or k not in obj]
    if lacking:
        raise damaged(path, what, f"no {', '.join(lacking)}")
    return obj


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else ""
