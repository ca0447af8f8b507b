"""What each method, model and dataset IS, spelled once (torch-free: Snakemake parses the workflow with it).

A method's entry says its kind (how the grid trains it: `sparsenets.study.plan`), the facts its builder and
the grid act on (needs data, nested, fresh weights, changed by a first-layer-dense layer policy), the module
that implements it, how figures and tables name and draw it, and its style family. A model's entry holds what
a plan prices it at; a dataset's its image shape, classes and split sizes (a plan comes before any download,
and a file put in place by hand is checked against them).

The registries (`sparsenets.pruning`, `sparsenets.topology`, `sparsenets.models`, `sparsenets.data`) register
against this catalogue: a builder for a name it lacks fails at registration, and tests/test_catalogue.py checks
that every entry has its implementation and every implementation its entry. Adding a method is its module and
one entry here (and its section in docs/METHODS.md): docs/ADDING_A_METHOD.md.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Mapping, TypeVar

T = TypeVar("T")

# How the grid trains a method (sparsenets.study.plan): a mask built at initialisation and trained static
# (pruning), a structure that moves during training (topology), a topology that is only a phase of another
# method (phase: mag's gradual pruning), and compositions of those: IMP, mag, random-like-M, dnw-freezeK.
KINDS = ("pruning", "topology", "phase", "imp", "mag", "layer-matched", "frozen-dnw")
MAG = "mag"  # magnitude pruning after training (PHEW's MAG reference): dense run, gradual pruning, retraining
GRADUAL = "gradual-magnitude"  # the topology of mag's pruning phase (sparsenets.topology.gradual)
LIKE = "random-like-"  # random-like-M: random wiring with the per-layer densities of M's final structure


@dataclass(frozen=True)
class Style:
    """How one method is drawn in every figure."""

    color: str
    marker: str
    dashes: tuple[float, ...] = ()  # () solid; a reference (mag) is dashed
    family: str = ""


@dataclass(frozen=True)
class Method:
    """One method a study can list (or the builder or phase one uses). `pattern`: a family of names (its
    `name` spells it as docs/METHODS.md does: random-like-M, dnw-freezeK)."""

    name: str
    kind: str
    module: str = ""  # its module in sparsenets.pruning or sparsenets.topology ("" for a composition)
    family: str = ""  # the style family: methods of one family share a hue (sparsenets.styles)
    label: str = ""  # how figures and tables name it, where the name alone would mislead
    style: Style | None = None  # its colour and marker (None: a spare one, from its name)
    needs_data: bool = False  # its builder reads training images (snip, grasp)
    nested: bool = False  # each density grows from the next sparser one's mask (a chain)
    fresh_weights: bool = False  # trained from a new init, not the one its mask was built on
    first_layer_dense: bool = False  # a uniform method that a first-layer-dense layer policy changes
    pattern: str = ""  # a regular expression for the names of a family of methods (random-like-M)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"method {self.name!r}: kind {self.kind!r} is not one of {', '.join(KINDS)}")


def _m(name: str, kind: str, family: str, color: str = "", marker: str = "", **facts) -> Method:
    style = Style(color, marker, facts.pop("dashes", ()), family) if color else None
    return Method(name, kind, family=family, style=style, **facts)


# The order is the legend's, the tables' and the drawing order.
METHODS: dict[str, Method] = {m.name: m for m in (
    _m("random", "pruning", "random", "#404040", "o", module="random", first_layer_dense=True),
    _m("random-erk", "pruning", "random", "#9a9a9a", "v", module="random", first_layer_dense=True),
    _m("magnitude", "pruning", "saliency", "#8c564b", "s", module="magnitude", label="magnitude at init"),
    _m(MAG, "mag", "after training", "#000000", "x", dashes=(5, 2),  # the upper reference, dashed
       label="mag (pruned after training)"),  # PHEW's MAG: a reference, not a method at initialisation
    _m("snip", "pruning", "saliency", "#17becf", "D", module="snip", needs_data=True),
    _m("grasp", "pruning", "saliency", "#bcbd22", "P", module="grasp", needs_data=True),
    _m("synflow", "pruning", "synflow", "#1f4e9c", "^", module="synflow"),
    _m("synflow-l2", "pruning", "synflow", "#6baed6", ">", module="synflow"),
    _m("phew", "pruning", "phew", "#d62728", "*", module="phew"),
    _m("phew-reinit", "pruning", "phew", "#ff9896", "X", module="phew", fresh_weights=True),
    _m("phew-res", "pruning", "phew", "#e377c2", "h", module="phew", nested=True,
       label="phew-res (nested)"),  # PHEW's PHEW_Res: each density grown from the next sparser mask
    _m("imp", "imp", "imp", "#ff7f0e", "p"),
    _m("dnw", "topology", "dnw", "#2ca02c", "d", module="dnw"),
    _m("rigl", "topology", "rigl", "#8e52c4", "H", module="rigl"),
    _m("random-like-imp", "layer-matched", "random", "#a08c78", "8"),  # grey tinted orange
    _m("random-like-dnw", "layer-matched", "random", "#6f8f6f", "<"),  # grey tinted green
    _m("random-like-rigl", "layer-matched", "random", "#857a96", "1"),  # grey tinted purple
    _m("dnw-freezeK", "frozen-dnw", "dnw", "#00441b", "o", pattern=r"dnw-freeze(\d+)"),  # any k: one style
    _m("random-like-M", "layer-matched", "random", pattern=re.escape(LIKE) + r"(.+)"),
    _m("random-like", "pruning", "random", module="random"),  # the layer-matched masks' builder (option `like`)
    _m(GRADUAL, "phase", "after training", module="gradual"),
)}


@dataclass(frozen=True)
class Model:
    """One network of the registry, as a plan prices it before anything runs."""

    name: str
    # training images per second on one A100 (bf16 autocast and channels_last; batch 128): ASSUMED, not measured
    # (sparsenets.plan: scaled from public CIFAR timings; `plan --calibrate results/` replaces it by measurements)
    gpu_images_per_s: int


MODELS: dict[str, Model] = {m.name: m for m in (
    Model("mlp", 100_000), Model("convnet", 40_000), Model("resnet20", 25_000), Model("vgg19", 10_000),
    Model("vgg19-nobn", 11_000), Model("resnet18", 8_000),
    # 64x64 Tiny-ImageNet nets: a quarter of the 32x32 figure
    Model("resnet18-tin", 2_000), Model("vgg19-tin", 2_500), Model("vgg19-nobn-tin", 2_750),
)}


@dataclass(frozen=True)
class Dataset:
    """What `sparsenets.data.prepare` writes for a dataset: its split sizes, image shape and classes."""

    name: str
    train: int  # training images
    test: int  # test images (Tiny-ImageNet's validation images)
    shape: tuple[int, int, int]  # (C, H, W)
    classes: int
    exact: bool = True  # a file of it must hold this shape and these classes (synthetic's may be generated so)


DATASETS: dict[str, Dataset] = {d.name: d for d in (
    Dataset("cifar10", 50_000, 10_000, (3, 32, 32), 10),
    Dataset("cifar100", 50_000, 10_000, (3, 32, 32), 100),
    Dataset("mnist", 60_000, 10_000, (1, 28, 28), 10),
    Dataset("digits", 1_438, 359, (1, 8, 8), 10),
    Dataset("synthetic", 2_000, 500, (3, 16, 16), 10, exact=False),
    Dataset("tiny-imagenet", 100_000, 10_000, (3, 64, 64), 200),
)}


def method(name: str) -> Method | None:
    """The entry of a method: its own, or its family's (dnw-freeze3 is dnw-freezeK); None for an unknown name."""
    if name in METHODS:
        return METHODS[name]
    return next((m for m in METHODS.values() if m.pattern and re.fullmatch(m.pattern, name)), None)


def of_kind(*kinds: str) -> list[str]:
    """The names of the methods of these kinds, in catalogue order (families left out)."""
    return [m.name for m in METHODS.values() if m.kind in kinds and not m.pattern]


def label(name: str) -> str:
    """How figures and tables name a method: its label, or its name."""
    entry = METHODS.get(name)
    return entry.label or name if entry else name


def names() -> dict[str, list[str]]:
    """The registries' names as `python -m sparsenets names` prints them: models, mask builders, datasets and
    the topologies a study may list."""
    return {"models": sorted(MODELS), "methods": sorted(of_kind("pruning")), "datasets": sorted(DATASETS),
            "topologies": sorted(of_kind("topology"))}


def entry(table: Mapping[str, T], name: str, what: str) -> T:
    """`table[name]`, or an error naming the catalogue: a registry's builder for a name it lacks."""
    if name not in table:
        raise ValueError(f"{what} {name!r} has no entry in sparsenets.catalogue: add one there "
                         "(docs/ADDING_A_METHOD.md)")
    return table[name]


def registered(names: Iterable[str], table: Mapping[str, T], what: str) -> None:
    """A registry's names, each checked to have its catalogue entry (the registry registers against it)."""
    for name in names:
        entry(table, name, what)


__all__ = ["DATASETS", "Dataset", "GRADUAL", "KINDS", "LIKE", "MAG", "METHODS", "MODELS", "Method", "Model",
           "Style", "entry", "label", "method", "names", "of_kind", "registered"]
