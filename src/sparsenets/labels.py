"""Display names of methods in figures and tables (torch-free, so the figure jobs stay light).

The registry names stay short and stable (they are paths and config values); a reader needs to
see that `magnitude` prunes the weights at initialisation, not after training (PHEW's MAG).
"""
from __future__ import annotations

LABELS: dict[str, str] = {
    "magnitude": "magnitude at init",
    "mag": "mag (pruned after training)",  # PHEW's MAG: a reference, not a method at initialisation
    "phew-res": "phew-res (nested)",  # PHEW's PHEW_Res: each density grown from the next sparser mask
}


def label(method: str) -> str:
    """How figures and tables name `method`: its display name, or the registry name itself."""
    return LABELS.get(method, method)


__all__ = ["LABELS", "label"]
