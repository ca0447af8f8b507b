"""How each method is drawn and listed, the same in every figure, table and the report (torch- and
matplotlib-free, so tables and the report use it without drawing anything).

Methods come in families, each with its own hue: random wirings grey (random-like-M a grey tinted towards
M's hue, so C4's pair imp / random-like-imp never looks alike), saliency at init (magnitude, SNIP, GraSP)
earthy, SynFlow blue, PHEW red, IMP orange, DNW green, RigL purple, mag black and dashed. Within a family,
shades and markers differ; every method has its own marker. Each method's style is part of its entry in
`sparsenets.catalogue`; a method without one gets a spare style chosen from its name, the same everywhere.
"""
from __future__ import annotations

import re
import zlib
from typing import Iterable

from .catalogue import METHODS, Style

STYLES: dict[str, Style] = {m.name: m.style for m in METHODS.values() if m.style}  # the catalogue's, in its order
FAMILIES = {re.compile(m.pattern): m.name for m in METHODS.values() if m.pattern and m.style}  # one entry, many names
SPARE_COLORS = ("#393b79", "#637939", "#843c39", "#7b4173", "#3182bd", "#e6550d", "#31a354", "#756bb1")
SPARE_MARKERS = ("o", "s", "^", "v", "D", "P", "X", "*")


def style(method: str) -> Style:
    """The method's style, the same in every figure: its entry, its family's, or a spare one picked by a
    stable hash of its name (so an unlisted method still looks the same everywhere)."""
    if method in STYLES:
        return STYLES[method]
    for pattern, family in FAMILIES.items():
        if pattern.fullmatch(method):
            return STYLES[family]
    h = zlib.crc32(method.encode())
    return Style(SPARE_COLORS[h % len(SPARE_COLORS)], SPARE_MARKERS[(h // len(SPARE_COLORS)) % len(SPARE_MARKERS)])


def ordered(methods: Iterable[str]) -> list[str]:
    """Methods in STYLES' order (families at their entry), unlisted ones after, by name."""
    rank = {m: i for i, m in enumerate(STYLES)}

    def key(m: str) -> tuple[int, str]:
        family = next((f for p, f in FAMILIES.items() if p.fullmatch(m)), m)
        return rank.get(family, len(rank)), m

    return sorted(set(methods), key=key)


def lab(color: str) -> tuple[float, float, float]:
    """CIE L*a*b* (D65) of a "#rrggbb" colour: how far apart two colours look (ΔE, Euclidean)."""
    rgb = [int(color.lstrip("#")[i:i + 2], 16) / 255 for i in (0, 2, 4)]
    lin = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in rgb]
    m = ((0.4124, 0.3576, 0.1805), (0.2126, 0.7152, 0.0722), (0.0193, 0.1192, 0.9505))
    x, y, z = (sum(a * b for a, b in zip(row, lin)) for row in m)
    f = [t ** (1 / 3) if t > 0.008856 else 7.787 * t + 16 / 116 for t in (x / 0.95047, y, z / 1.08883)]
    return 116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])


def distance(a: str, b: str) -> float:
    """ΔE (CIE76) between two colours: above about 20 they read as different colours at a glance."""
    return sum((p - q) ** 2 for p, q in zip(lab(a), lab(b))) ** 0.5


__all__ = ["FAMILIES", "STYLES", "Style", "distance", "lab", "ordered", "style"]
