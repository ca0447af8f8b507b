"""The one way the package writes a file: whole or not at all, and durable once the job says it is done.

A killed job, or a reader racing a writer, never sees half a file, and a finished file survives a crash of
the machine (the file and its folder are fsynced). Torch-free, so table, figure and claims jobs stay light.
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path` to write to; then fsync it, rename it over `path`, fsync the folder.

    The temporary name is fixed (`.{name}.tmp`), not random: `torch.save` records it inside the archive,
    so a random one would make two identical saves differ. Each output has one writer (one DAG job).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync(path.parent)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Indented JSON, readable in a diff; numpy scalars and tensors become numbers and lists."""
    write_text(path, json.dumps(obj, indent=1, default=_json_default))


def save_npz(path: str | os.PathLike, arrays: Mapping[str, np.ndarray]) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


def _json_default(o: Any) -> Any:
    """numpy scalars as numbers; tensors as lists (torch is only looked at if a caller already imported it)."""
    if isinstance(o, (np.integer, np.floating)):
        return o.item()
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(o, torch.Tensor):
        return o.tolist()
    raise TypeError(f"cannot serialise {type(o).__name__}")


__all__ = ["atomic_path", "save_npz", "write_json", "write_text"]
