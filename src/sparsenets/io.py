"""The one way the package writes a file: whole or not at all, and durable once the job says it is done.

A killed job, or a reader racing a writer, never sees half a file, and a finished file survives a crash of
the machine (the file and its folder are fsynced). A write that runs out of space (a full disk, a quota)
leaves nothing either, and fails with one line naming the file and the free space (`DiskFull`).
Torch-free, so table, figure and claims jobs stay light.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

NO_SPACE = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded"}
SQLITE_FULL = "database or disk is full"  # SQLite's words for ENOSPC (SQLITE_FULL): it drops the errno


class DiskFull(OSError):
    """A write failed for lack of space or quota; its message names the file and the free space, and nothing
    was written, so a rerun once space is freed starts clean (a training job resumes from its checkpoint)."""


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path` to write to; then fsync it, rename it over `path`, fsync the folder.

    The temporary name is fixed (`.{name}.tmp`), not random: each output has one writer (one DAG job), and a
    job killed mid-write leaves a temporary that its rerun overwrites, not one more orphan. A write that runs
    out of space raises `DiskFull` (the temporary removed, an older `path` untouched).
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException as e:
        written = tmp.stat().st_size if tmp.exists() else 0
        tmp.unlink(missing_ok=True)
        full = disk_full(e, path, written)
        if full is not None:
            raise full from e
        raise
    _fsync(path.parent)


def disk_full(e: BaseException | None, path: str | os.PathLike, written: int = 0) -> DiskFull | None:
    """`e` as a `DiskFull` naming `path` if it (or an error it was raised from: torch wraps the OSError of
    the write) is ENOSPC, EDQUOT or SQLite's "database or disk is full"; else None."""
    seen: list[BaseException] = []
    while e is not None and e not in seen and len(seen) < 8:
        seen.append(e)
        code = getattr(e, "errno", None) if isinstance(e, OSError) else None
        if code in NO_SPACE or SQLITE_FULL in str(e):
            code = code if code in NO_SPACE else errno.ENOSPC
            full = DiskFull(_no_space_message(code, Path(path), written))
            full.errno = code
            return full
        e = e.__cause__ or e.__context__
    return None


def _no_space_message(code: int, path: Path, written: int) -> str:
    folder = next((p for p in (path.parent, *path.parents) if p.exists()), Path("/"))
    free = f"{format_bytes(shutil.disk_usage(folder).free)} free on its filesystem"
    if code == errno.EDQUOT:
        free += " (your quota is lower)"
    needs = f" (it needs more than the {format_bytes(written)} written)" if written else ""
    return (f"{NO_SPACE[code]} writing {path}: {free}{needs}; nothing was written: free some space and run "
            "again (a training job resumes from its last checkpoint)")


def format_bytes(n: int) -> str:
    """1536 -> '1.5 KiB': sizes in messages."""
    size, unit = float(n), "B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            break
        size /= 1024
    return f"{int(size)} B" if unit == "B" else f"{size:.1f} {unit}"


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


__all__ = ["DiskFull", "atomic_path", "disk_full", "format_bytes", "save_npz", "write_json", "write_text"]
