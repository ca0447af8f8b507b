"""The unit graph of a model: which units feed each prunable layer, and which layers read its units.

We trace the model with torch.fx and follow every value back to the prunable layers (or the input)
that produce it, through a short list of operations that keep channels apart (BatchNorm, ReLU,
pooling, dropout, flatten) and through additions. A trace reads the real forward pass, so the graph
cannot drift from the model; any other operation is an error naming it, so an architecture we do not
understand fails loudly instead of yielding a wrong graph.

An addition operand whose value is also read elsewhere (the input of a residual block) is an
identity shortcut: it has no weights, so PHEW never walks it, but its units do reach every layer that
reads the sum, which counts for widths. A flatten sends channel c to the inputs c*H*W ... (c+1)*H*W-1
of the next linear (torch's channel-major order); the graph stores H*W as the edge's `spread`.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import fx, nn
from torch.nn import functional as F

from .masks import prunable

INPUT = "input"  # the name of the network input's units (its channels) in a UnitGraph

_UNIT_MODULES = (
    nn.BatchNorm1d, nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d, nn.AvgPool2d,
    nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Dropout, nn.Identity, nn.Flatten,
)
_UNIT_FUNCTIONS = {F.relu, torch.relu, F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d, F.dropout, torch.flatten}
_UNIT_METHODS = {"relu", "relu_", "flatten"}
_ADD_FUNCTIONS = {operator.add, torch.add}


@dataclass(frozen=True)
class Edge:
    """Layer `dst` reads the units of `src` (a layer, or INPUT): unit u feeds the inputs
    u*spread ... (u+1)*spread-1 of `dst`."""

    src: str
    dst: str
    spread: int
    skip: bool  # only through identity shortcuts: counts for widths, never walked


@dataclass(frozen=True)
class UnitGraph:
    units: dict[str, int]  # INPUT, then every prunable layer in topological order -> its units
    edges: tuple[Edge, ...]
    output: str  # the layer whose units are the model's outputs

    @property
    def layers(self) -> list[str]:
        """Prunable layers in topological order."""
        return [k for k in self.units if k != INPUT]

    def sources(self, layer: str, walked: bool = False) -> list[Edge]:
        """Edges into `layer`; with `walked`, only those a walk may take."""
        return [e for e in self.edges if e.dst == layer and not (walked and e.skip)]

    def consumers(self, layer: str, walked: bool = False) -> list[Edge]:
        """Edges out of `layer` (or INPUT); with `walked`, only those a walk may take."""
        return [e for e in self.edges if e.src == layer and not (walked and e.skip)]


def unit_graph(model: nn.Module, input_shape: Sequence[int]) -> UnitGraph:
    """The unit graph of `model` for inputs of shape (C, H, W); layers are named as in `prunable`."""
    weights = prunable(model)
    modules = dict(model.named_modules())
    kind = type(model).__name__
    try:
        nodes = fx.symbolic_trace(model).graph.nodes
    except Exception as e:  # noqa: BLE001 - any tracing failure gets one clear message
        raise ValueError(f"unit graph: cannot trace {kind} with torch.fx ({type(e).__name__}: {e})") from e

    units = {INPUT: int(input_shape[0])}
    edges: list[Edge] = []
    # value -> the layers producing its units -> True if it reaches them only through identity shortcuts
    sources: dict[fx.Node, dict[str, bool]] = {}
    output: list[str] = []
    for node in nodes:
        if node.op == "placeholder":
            sources[node] = {INPUT: False}
        elif node.op == "output":
            output = list(sources[node.args[0]]) if isinstance(node.args[0], fx.Node) else []
        elif _is_layer(node, modules):
            name = f"{node.target}.weight"
            if name in units:
                raise ValueError(f"unit graph: {kind} calls layer {node.target} more than once")
            units[name] = weights[name].shape[0]
            fan_in = weights[name].shape[1]
            edges += [_edge(src, name, fan_in, units[src], skip) for src, skip in sources[node.args[0]].items()]
            sources[node] = {name: False}
        elif _is_add(node):
            merged: dict[str, bool] = {}
            for arg in node.args:
                if isinstance(arg, fx.Node):
                    shortcut = _is_shared(arg, modules)
                    for src, skip in sources[arg].items():
                        merged[src] = merged.get(src, True) and (skip or shortcut)
            sources[node] = merged
        elif _keeps_units(node, modules):
            sources[node] = sources[node.args[0]]
        else:
            raise ValueError(f"unit graph: {kind} uses {node.op} {node.target!r}, which the unit graph does not know")

    missing = sorted(set(weights) - set(units))
    if missing:
        raise ValueError(f"unit graph: {kind}'s forward never calls the layers {missing}")
    if len(output) != 1 or output[0] == INPUT:
        raise ValueError(f"unit graph: {kind}'s output must come from one prunable layer, got {output}")
    return UnitGraph(units, tuple(edges), output[0])


def _edge(src: str, dst: str, fan_in: int, src_units: int, skip: bool) -> Edge:
    if fan_in % src_units:
        raise ValueError(f"unit graph: {dst} reads {fan_in} inputs, not a multiple of the {src_units} units of {src}")
    return Edge(src, dst, fan_in // src_units, skip)


def _is_layer(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    return node.op == "call_module" and isinstance(modules[node.target], (nn.Conv2d, nn.Linear))


def _is_add(node: fx.Node) -> bool:
    if node.op == "call_function":
        return node.target in _ADD_FUNCTIONS
    return node.op == "call_method" and node.target == "add"


def _keeps_units(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    if node.op == "call_module":
        return isinstance(modules[node.target], _UNIT_MODULES)
    if node.op == "call_function":
        return node.target in _UNIT_FUNCTIONS
    return node.op == "call_method" and node.target in _UNIT_METHODS


def _is_shared(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """Whether an addition operand is an identity shortcut: its value is read elsewhere too, before
    any layer produced it (a weighted branch is read only by its own chain into the addition)."""
    while len(node.users) == 1:
        if not _keeps_units(node, modules):
            return False
        node = node.args[0]
    return True
