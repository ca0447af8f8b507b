"""Display names of methods in figures and tables (torch-free, so the figure jobs stay light): each method's
`label` in `sparsenets.catalogue`.

The registry names stay short and stable (they are paths and config values); a reader needs to
see that `magnitude` prunes the weights at initialisation, not after training (PHEW's MAG).
"""
from __future__ import annotations

from .catalogue import METHODS, label

LABELS: dict[str, str] = {m.name: m.label for m in METHODS.values() if m.label}

__all__ = ["LABELS", "label"]
