"""Tidy tables from the files the runs wrote: one row per run (or per run and epoch, or per layer).

Figures are drawn from these, never from MLflow, so the DAG knows what to rebuild.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from .labels import label
from .readers import read_json


def _read(path: str | Path, keys: tuple[str, ...] | None = None) -> dict[str, Any]:
    """A run file (metrics.json, structure.json, curve.json) holding `keys` (default: what every reader
    needs); a damaged one names its rule and the fix."""
    return read_json(path, "run file", keys=_KEYS.get(Path(path).name, ()) if keys is None else keys)


_KEYS = {"metrics.json": ("spec",), "curve.json": ("spec", "rows")}
RUN_KEYS = ("spec", "history", "final_test_acc", "best_test_acc", "final_train_loss", "density", "epochs")


def runs_table(metrics_files: Iterable[str | Path]) -> pd.DataFrame:
    """One row per run: what defines it, its final and best accuracy, and its structure totals."""
    rows = []
    for f in metrics_files:
        m = _read(f, RUN_KEYS)
        spec = m["spec"]
        row = {**spec, "label": label(spec["method"]), "density": float(spec["density"]), "seed": int(spec["seed"]),
               "actual_density": m["density"], "final_test_acc": m["final_test_acc"],
               "best_test_acc": m["best_test_acc"], "final_train_loss": m["final_train_loss"],
               "epochs": m["epochs"], "diverged": bool(m.get("diverged", False)), "topology": m.get("topology", "static"),
               "freeze_epoch": m.get("topology_options", {}).get("freeze_epoch"), **_regime(m),
               "path": str(Path(f).parent)}
        structure = Path(f).with_name("structure.json")
        if structure.exists():
            stats = _read(structure)
            summary = stats.get("summary", {})  # its density is actual_density, not the spec's
            row.update({k: v for k, v in summary.items() if _scalar(v) and k != "density"})
            row.update({f"init_{k}": v for k, v in stats.get("init", {}).items() if _scalar(v) and k != "density"})
        rows.append(row)
    return pd.DataFrame(rows)


REGIME_KEYS = ("test_size", "train_images", "steps_per_epoch")  # what the claims' regime rules read (None: unrecorded)


def _regime(metrics: dict[str, Any]) -> dict[str, Any]:
    """A run's test-set size, images and optimizer steps per epoch, and its epochs (None where an older run did
    not record them: the claims then say so)."""
    return {"epochs": metrics.get("epochs"), **{k: metrics.get(k) for k in REGIME_KEYS}}


def epochs_table(metrics_files: Iterable[str | Path]) -> pd.DataFrame:
    """One row per run and epoch, for curves over training."""
    rows = []
    for f in metrics_files:
        m = _read(f, ("spec", "history"))
        for h in m["history"]:
            rows.append({**m["spec"], "label": label(m["spec"]["method"]), **h, "density": float(m["spec"]["density"]),
                         "actual_density": h["density"]})
    return pd.DataFrame(rows)


def layers_table(structure_files: Iterable[str | Path]) -> pd.DataFrame:
    """One row per run and prunable layer, for per-layer widths and densities."""
    rows = []
    for f in structure_files:
        s = _read(f, ("layers",))
        metrics = _read(Path(f).with_name("metrics.json"))
        spec = metrics["spec"]
        for i, layer in enumerate(s["layers"]):
            rows.append({**spec, **_regime(metrics), "label": label(spec["method"]), "layer_index": i,
                         **{k: v for k, v in layer.items() if _scalar(v)},
                         "density": float(spec["density"]), "layer_density": layer["density"]})
    return pd.DataFrame(rows)


def _scalar(v: Any) -> bool:
    return isinstance(v, (int, float, str, bool)) or v is None


def _spec(spec: dict[str, Any]) -> dict[str, Any]:
    """A run's spec with its density and seed as numbers, for grouping and plotting."""
    return {**spec, "density": float(spec["density"]), "seed": int(spec["seed"])}


def sensitivity_table(curve_files: Iterable[str | Path]) -> pd.DataFrame:
    """One row per run, further-pruning mode, BN recalibration and fraction (Deconstructing Fig. 2), with
    the run's number of classes (chance accuracy is 1/num_classes)."""
    rows = []
    for f in curve_files:
        c = _read(f)
        if "num_classes" not in c:
            raise ValueError(f"sensitivity curve {f} has no num_classes: it predates that field; rerun its job")
        rows += [{**_spec(c["spec"]), "num_classes": int(c["num_classes"]), "test_size": c.get("test_size"),
                  "ranking": "global", **r} for r in c["rows"]]  # older curves: ranked globally, no test_size
    return pd.DataFrame(rows)


def _history(structure_files: Iterable[str | Path], with_regime: bool = False) -> Iterable[tuple]:
    """(spec, epoch record) of every run that recorded its structure per epoch (static runs have none); with
    `with_regime` also the run's regime (its epochs, steps and images per epoch, test-set size)."""
    for f in structure_files:
        history = _read(f).get("history", [])
        if history:
            metrics = _read(Path(f).with_name("metrics.json"))
            spec = _spec(metrics["spec"])
            regime = _regime(metrics)
            yield from ((spec, h, regime) if with_regime else (spec, h) for h in history)


def indegree_table(structure_files: Iterable[str | Path]) -> pd.DataFrame:
    """One row per run, epoch and unit: its kept incoming weights and input channels (Deconstructing Fig. 3).

    Built column-wise: a ResNet-18 run has ~5k units per epoch."""
    frames = []
    for spec, h in _history(structure_files):
        for layer, (elements, channels) in h["in_degree"].items():
            frames.append(pd.DataFrame({**spec, "epoch": h["epoch"], "layer": layer, "unit": range(len(elements)),
                                        "in_degree": elements, "in_channels": channels}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def overlap_table(structure_files: Iterable[str | Path]) -> pd.DataFrame:
    """One row per run and epoch: the share of the previous epoch's kept weights this epoch keeps
    (overlap_prev, NaN where there is no previous record) and the share of this epoch's kept weights
    the final structure keeps (overlap_final)."""
    return pd.DataFrame([{**spec, "epoch": h["epoch"], "overlap_prev": h["overlap_prev"],
                          "overlap_final": h["overlap_final"], **regime} for spec, h, regime in
                         _history(structure_files, with_regime=True)])
