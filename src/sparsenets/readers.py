"""Reading what another job wrote: a damaged file fails the reader with its path, the rule that writes it,
and the fix (delete it; Snakemake then reruns that rule, since a missing output is always remade). A good
file of another kind (a run's model.pt given where a mask is read) is not damaged: the reader says what the
file is and what it expected, and advises no deletion. A path that does not exist gets the nearest name.

Files are written whole or not at all (`io.atomic_path`), so damage means a disk fault, a copy cut short,
or a hand edit; the reader cannot repair it, but it can say exactly what to delete. Torch is imported only
by `load_torch`, so table and figure jobs stay light.
"""
from __future__ import annotations

import difflib
import json
import os
from pathlib import Path
from typing import Any, Callable

from . import study
from .study import TEMPLATES, Run


class DamagedFile(ValueError):
    """A file another job wrote cannot be read; the message names it, its rule and the fix."""


def producer(path: str | os.PathLike) -> str | None:
    """The Snakemake rule that writes `path`, from its place in the results layout (`study.producer`); None
    outside it."""
    return study.producer(path)


def damaged(path: str | os.PathLike, what: str, reason: str) -> DamagedFile:
    """The error for an unreadable `path` (`what`: "mask file", "run metrics", ...)."""
    rule = producer(path)
    fix = (f"it is written by rule {rule}: delete it and run snakemake again, which reruns that job "
           "(Snakemake remakes a missing output)" if rule else "replace it with a good copy")
    return DamagedFile(f"{what} {path} is damaged or not what it should be ({reason}); {fix}")


class WrongKind(ValueError):
    """A readable file of another kind than the reader expects; the message says what it is and what was expected."""


def _is_tensor(v: Any) -> bool:
    return type(v).__name__ in ("Tensor", "Parameter")


# What each kind of file sparsenets writes looks like once loaded: id -> (what it is, test). Torch files, then JSON.
KINDS: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "mask": ("a mask file (mask.pt: 'masks' and 'meta')",
             lambda b: isinstance(b, dict) and isinstance(b.get("masks"), dict)),
    "checkpoint": ("a training checkpoint (checkpoint.pt)",
                   lambda b: isinstance(b, dict) and {"key", "epoch", "model"} <= b.keys()),
    "epoch-mask": ("a structure recorder's epoch mask (packed bits)",
                   lambda b: isinstance(b, dict) and {"packed", "shapes"} <= b.keys()),
    "weights": ("a model's weights (model.pt, init.pt or rewind.pt: a state_dict, parameter name -> tensor)",
                lambda b: isinstance(b, dict) and any(str(k).endswith(("weight", "bias")) for k in b)
                and all(isinstance(k, str) and _is_tensor(v) for k, v in b.items())),
    "metrics": ("a run's metrics (metrics.json)", lambda b: isinstance(b, dict) and {"spec", "history"} <= b.keys()),
    "curve": ("a sensitivity curve (curve.json)", lambda b: isinstance(b, dict) and {"spec", "rows"} <= b.keys()),
    "structure": ("a run's structure (structure.json)",
                  lambda b: isinstance(b, dict) and {"init", "summary", "layers"} <= b.keys()),
}
# What a reader expects, by the `what` it names files with.
EXPECTED = {
    "mask file": "a mask file: a torch file holding 'masks' (layer name -> 0/1 tensor) and 'meta', as the rules mask "
                 f"and train write ({TEMPLATES['mask'].format(results='results', study='{study}', run=Run.pattern())}, "
                 "or a run's mask.pt)",
    "trained weights": "a model's weights: a state_dict (parameter name -> tensor), a run's model.pt",
    "initial weights": "a model's weights: a state_dict (parameter name -> tensor), init.pt or rewind.pt",
    "run metrics": "a run's metrics.json, holding 'spec' and 'history'",
}


def kind_of(blob: Any) -> str | None:
    """Which kind of sparsenets file (a KINDS id) `blob`, a loaded torch or JSON file, is; None for none we know."""
    return next((kind for kind, (_, test) in KINDS.items() if test(blob)), None)


def wrong_kind(path: str | os.PathLike, what: str, found: str) -> WrongKind:
    """The error for a good file of another kind: no deletion advised, the expected kind spelt out."""
    expected = EXPECTED.get(what, f"a {what}")
    return WrongKind(f"{path} is {found}, not a {what}: expected {expected}. The file itself is fine; "
                     "give the path of the file this command reads")


def expect(path: str | os.PathLike, what: str, blob: Any, ok: Callable[[Any], bool], reason: str,
           kind: str | None = None) -> Any:
    """`blob` if `ok(blob)`; else a wrong-kind error when it is another kind of file we know (not `kind`, the
    one the reader expects: a bad copy of that is damaged), a damaged-file error if not."""
    if ok(blob):
        return blob
    found = kind_of(blob)
    if found is not None and found != kind:
        raise wrong_kind(path, what, KINDS[found][0])
    raise damaged(path, what, reason)


def missing(path: str | os.PathLike, what: str) -> FileNotFoundError:
    """The error for a path that does not exist: its rule, and the nearest existing name (a typo)."""
    rule = producer(path)
    made = f": it is written by rule {rule}; run snakemake to make it" if rule else ""
    near = nearest(path)
    return FileNotFoundError(f"{what} {path} does not exist{made}" + (f"; did you mean {near}?" if near else ""))


def nearest(path: str | os.PathLike) -> str | None:
    """The existing path closest to `path`: below its deepest existing folder, each missing part replaced by the
    closest name there (difflib); None when nothing is close."""
    p = Path(path)
    parts = p.parts
    base = Path(parts[0]) if p.is_absolute() else Path(".")
    rest = parts[1:] if p.is_absolute() else parts
    for i, part in enumerate(rest):
        if (base / part).exists():
            base = base / part
            continue
        try:
            names = [c.name for c in base.iterdir()]
        except OSError:
            return None
        match = difflib.get_close_matches(part, names, n=1, cutoff=0.5)
        if not match:
            return None
        base = base / match[0]
    return str(base) if base.exists() and str(base) != str(p) else None


def _magic(path: str | os.PathLike) -> bytes:
    with open(path, "rb") as f:
        return f.read(8)


def load_torch(path: str | os.PathLike, what: str) -> Any:
    """`torch.load` of tensors only (weights_only), with a clear error if the file is missing, damaged, or of
    another kind (JSON, an image, a torch file holding Python objects)."""
    import torch

    if not Path(path).exists():
        raise missing(path, what)
    head = _magic(path)
    if head.lstrip()[:1] in (b"{", b"["):
        raise wrong_kind(path, what, "a JSON file")
    if head.startswith(b"\x89PNG") or head.startswith(b"%PDF"):
        raise wrong_kind(path, what, "an image" if head.startswith(b"\x89PNG") else "a PDF")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - truncated, foreign or pickled-code files all get one message
        if "Weights only load failed" in str(e) and head.startswith(b"PK"):
            raise wrong_kind(path, what, "a whole torch file holding Python objects, not tensors only (such as "
                                         "a training checkpoint, checkpoint.pt)") from e
        raise damaged(path, what, f"{type(e).__name__}: {_first_line(e)}") from e


def read_json(path: str | os.PathLike, what: str, keys: tuple[str, ...] = ()) -> Any:
    """A JSON object another job wrote, which must hold `keys`."""
    if not Path(path).exists():
        raise missing(path, what)
    try:
        obj = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        if _magic(path).startswith(b"PK"):
            raise wrong_kind(path, what, "a torch file") from e
        raise damaged(path, what, f"{type(e).__name__}: {_first_line(e)}") from e
    lacking = [k for k in keys if not isinstance(obj, dict) or k not in obj]
    expected = kind_of(dict.fromkeys(keys))  # the kind these keys make: a bad copy of it is damaged, not another kind
    return expect(path, what, obj, lambda _: not lacking, f"no {', '.join(lacking)}", expected)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else ""
