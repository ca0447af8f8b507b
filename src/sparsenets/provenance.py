"""Where a result came from: the code's commit (and whether the tree had uncommitted changes), the data
file's name and digest, the preset. One helper for the report, claims.md and every MLflow run, so all three
say the same thing.

The commit comes from SPARSENETS_GIT_COMMIT when the workflow set it (workflow/rules/common.smk, from
`describe_commit` at the repository), else from git at the package's folder. A tree with uncommitted changes
to tracked files is marked "-dirty"; when git cannot tell, the commit is "unknown" and `warning` says why a
reader should care. A data file's sha256 is cached beside it (`{file}.sha256`, keyed by size and mtime), so
thousands of jobs hash a 180 MB CIFAR-10 file once. No torch, no mlflow: every job may import it.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any, Mapping

from .io import write_text

COMMIT_ENV = "SPARSENETS_GIT_COMMIT"
UNKNOWN = "unknown"
DIRTY = "-dirty"
CHUNK = 1 << 20


def _git(args: list[str], cwd: str | os.PathLike) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def describe_commit(repo: str | os.PathLike | None = None) -> str:
    """The commit of the code at `repo` (default: this package's checkout): "<sha>", "<sha>-dirty" when tracked
    files have uncommitted changes, or "unknown" when git cannot say (no git, not a checkout)."""
    repo = repo or Path(__file__).resolve().parent
    sha = _git(["rev-parse", "HEAD"], repo)
    if not sha:
        return UNKNOWN
    status = _git(["status", "--porcelain", "--untracked-files=no"], repo)
    return sha + (DIRTY if status else "") if status is not None else sha + "-status-unknown"


def commit() -> str:
    """The commit a job runs (SPARSENETS_GIT_COMMIT, as the workflow set it), else `describe_commit()`."""
    return os.environ.get(COMMIT_ENV) or describe_commit()


def is_dirty(sha: str) -> bool:
    return sha.endswith(DIRTY)


def warning(sha: str) -> str:
    """What a reader must know about a commit, or "" when it identifies the code exactly."""
    if not sha or sha == UNKNOWN:
        return ("the code's git commit is unknown (not run from a git checkout, or git is missing): these results "
                "cannot be traced to a version of sparsenets")
    if is_dirty(sha):
        return "the code had uncommitted changes when this ran: the commit alone does not reproduce it"
    if sha.endswith("-status-unknown"):
        return "git could not say whether the code had uncommitted changes"
    return ""


def sha256(path: str | os.PathLike) -> str:
    """The file's sha256, read from `{path}.sha256` when that cache matches the file's size and mtime, else
    computed and cached (written atomically; a read-only folder just skips the cache)."""
    path = Path(path)
    st = path.stat()
    key = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
    cache = path.with_name(path.name + ".sha256")
    try:
        cached = json.loads(cache.read_text())
        if {k: cached.get(k) for k in key} == key and len(cached.get("sha256", "")) == 64:
            return cached["sha256"]
    except (OSError, ValueError, AttributeError):
        pass
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    digest = h.hexdigest()
    try:
        write_text(cache, json.dumps({**key, "sha256": digest}) + "\n")
    except OSError:
        pass
    return digest


def data_file(path: str | os.PathLike) -> dict[str, Any]:
    """{file, sha256, bytes} of a data file (its name only: the folder differs between machines)."""
    p = Path(path)
    return {"file": p.name, "sha256": sha256(p), "bytes": p.stat().st_size}


def collect(preset: str, data: Mapping[str, str | os.PathLike]) -> dict[str, Any]:
    """Everything the report, claims.md and an MLflow run state: commit, dirty, warning, preset, and per
    dataset its file's name, digest and size."""
    sha = commit()
    return {"commit": sha, "dirty": is_dirty(sha), "warning": warning(sha), "preset": preset,
            "data": {name: data_file(path) for name, path in data.items()}}


def tags(preset: str, data: Mapping[str, str | os.PathLike]) -> dict[str, str]:
    """The same as flat string tags (MLflow): git_commit, git_dirty, preset, data_file.{name}, data_sha256.{name}."""
    p = collect(preset, data)
    out = {"git_commit": p["commit"], "git_dirty": str(p["dirty"]).lower(), "preset": preset}
    for name, d in p["data"].items():
        out[f"data_file.{name}"] = d["file"]
        out[f"data_sha256.{name}"] = d["sha256"]
    return out


def markdown(p: Mapping[str, Any]) -> str:
    """One paragraph for claims.md: commit (with its warning), preset, data files and digests."""
    lines = [f"Provenance: commit `{p['commit']}`, preset `{p['preset']}`"
             + "".join(f", data `{d['file']}` sha256 `{d['sha256']}`" for d in p["data"].values()) + "."]
    if p.get("warning"):
        lines.append(f"**Warning: {p['warning']}.**")
    return "\n\n".join(lines)


__all__ = ["collect", "commit", "data_file", "describe_commit", "is_dirty", "markdown", "sha256", "tags", "warning"]
