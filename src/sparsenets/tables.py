"""Tidy tables from the files the runs wrote: one row per run (or per run and epoch, or per layer).

Figures are drawn from these, never from MLflow, so the DAG knows what to rebuild.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

import pandas as pd


def _read(path: str | Path) -> dict[str, Any]:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"cannot read run file {path}: {e}") from e


def runs_table(metrics_files: Iterable[str | Path]) -> pd.DataFrame:
    """One row per run: what defines it, its final and best accuracy, and its structure totals."""
    rows = []
    for f in metrics_files:
        m = _read(f)
        spec = m["spec"]
        row = {**spec, "density": float(spec["density"]), "seed": int(spec["seed"]),
               "actual_density": m["density"], "final_test_acc": m["final_test_acc"],
               "best_test_acc": m["best_test_acc"], "final_train_loss": m["final_train_loss"],
               "epochs": m["epochs"], "topology": m.get("topology", "static"),
               "freeze_epoch": m.get("topology_options", {}).get("freeze_epoch"), "path": str(Path(f).parent)}
        structure = Path(f).with_name("structure.json")
        if structure.exists():
            row.update({k: v for k, v in _read(structure).get("summary", {}).items() if _scalar(v)})
        rows.append(row)
    return pd.DataFrame(rows)


def epochs_table(metrics_files: Iterable[str | Path]) -> pd.DataFrame:
    """One row per run and epoch, for curves over training."""
    rows = []
    for f in metrics_files:
        m = _read(f)
        for h in m["history"]:
            rows.append({**m["spec"], "density": float(m["spec"]["density"]), **h})
    return pd.DataFrame(rows)


def layers_table(structure_files: Iterable[str | Path]) -> pd.DataFrame:
    """One row per run and prunable layer, for per-layer widths and densities."""
    rows = []
    for f in structure_files:
        s = _read(f)
        spec = _read(Path(f).with_name("metrics.json"))["spec"]
        for i, layer in enumerate(s["layers"]):
            rows.append({**spec, "density": float(spec["density"]), "layer_index": i,
                         **{k: v for k, v in layer.items() if _scalar(v)}})
    return pd.DataFrame(rows)


def _scalar(v: Any) -> bool:
    return isinstance(v, (int, float, str, bool)) or v is None
