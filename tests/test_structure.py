"""The unit graph and the structure metrics, on masks whose answers we know by hand."""
from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from sparsenets.graph import INPUT, unit_graph
from sparsenets.masks import Mask, prunable
from sparsenets.models import build_model, init_weights
from sparsenets.models.mlp import MLP
from sparsenets.structure import format_table, in_degrees, layer_table, overlap, path_kernel_trace, summary

SHAPE = (3, 16, 16)


def rows_by_layer(model, mask, shape=SHAPE):
    return {r["layer"]: r for r in layer_table(model, mask, shape)}


# ---- the unit graph


def test_resnet_graph_walks_projections_and_flags_identity_shortcuts():
    g = unit_graph(build_model("resnet20", 10, SHAPE, seed=0), SHAPE)
    # a projection block is entered by its main path or its 1x1 shortcut, and left by both
    assert {e.dst for e in g.consumers("layers.0.2.conv2.weight", walked=True)} == {
        "layers.1.0.conv1.weight", "layers.1.0.shortcut.0.weight"}
    assert {e.src for e in g.sources("layers.1.1.conv1.weight", walked=True)} == {
        "layers.1.0.conv2.weight", "layers.1.0.shortcut.0.weight"}
    # the stem's units reach every layer reading a block output of stage 1, through identities
    skip = {e.dst for e in g.consumers("conv1.weight") if e.skip}
    assert skip == {"layers.0.1.conv1.weight", "layers.0.2.conv1.weight", "layers.1.0.conv1.weight",
                    "layers.1.0.shortcut.0.weight"}
    assert [e.dst for e in g.consumers("conv1.weight", walked=True)] == ["layers.0.0.conv1.weight"]
    assert g.output == "fc.weight" and g.units[INPUT] == 3 and len(g.layers) == 22


def test_flattening_spreads_a_channel_over_its_inputs():
    spread = lambda g, src, dst: next(e.spread for e in g.edges if (e.src, e.dst) == (src, dst))  # noqa: E731
    g = unit_graph(build_model("convnet", 10, SHAPE, seed=0), SHAPE)
    assert spread(g, "conv2.weight", "fc1.weight") == (16 // 4) ** 2
    vgg = build_model("vgg19", 10, SHAPE, seed=0)
    g = unit_graph(vgg, SHAPE)  # adaptive pool to 1x1 first
    assert spread(g, list(prunable(vgg))[-2], "fc.weight") == 1
    g = unit_graph(build_model("mlp", 10, SHAPE, seed=0), SHAPE)
    assert spread(g, INPUT, "hidden.0.weight") == 16 * 16


class Gated(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(torch.sigmoid(x))


class Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(x) if x.sum() > 0 else -self.fc(x)


def test_unknown_architectures_are_refused_by_name():
    with pytest.raises(ValueError, match="sigmoid"):
        unit_graph(Gated(), (4, 1, 1))
    with pytest.raises(ValueError, match="cannot trace Branchy"):
        unit_graph(Branchy(), (4, 1, 1))


# ---- widths and in-degrees


def tiny_mlp():
    return MLP(3, (1, 2, 2), hidden=(3,))  # hidden.0: 3x4, fc: 3x3


def test_widths_of_an_mlp_with_a_unit_cut_off_from_its_outputs():
    model = tiny_mlp()
    hidden = torch.zeros(3, 4, dtype=torch.bool)
    hidden[0, 1] = hidden[1, 2] = True  # hidden units 0 and 1 are fed, 2 is not
    fc = torch.zeros(3, 3, dtype=torch.bool)
    fc[0, 0] = fc[1, 2] = True  # outputs read hidden units 0 and 2; unit 1 reaches no output
    rows = rows_by_layer(model, Mask({"hidden.0.weight": hidden, "fc.weight": fc}), (1, 2, 2))
    h, o = rows["hidden.0.weight"], rows["fc.weight"]
    assert (h["width"], h["in_width"], h["dead"], h["units"]) == (1, 2, 2, 3)
    assert h["width_ratio"] == pytest.approx(1 / 3)
    assert (o["width"], o["in_width"], o["dead"]) == (2, 2, 1)  # outputs are always read
    assert (h["kept"], h["total"], h["density"]) == (2, 12, pytest.approx(2 / 12))


def test_units_read_only_through_identity_shortcuts_are_alive():
    model = build_model("resnet20", 10, SHAPE, seed=0)
    mask = {k: m.clone() for k, m in Mask.ones(model).items()}
    mask["layers.0.0.conv1.weight"][:, 0] = False  # stem unit 0 is no longer read by its block...
    assert rows_by_layer(model, Mask(mask))["conv1.weight"]["width"] == 16  # ...but still by the next
    for e in unit_graph(model, SHAPE).consumers("conv1.weight"):
        mask[e.dst][:, 0] = False
    assert rows_by_layer(model, Mask(mask))["conv1.weight"]["width"] == 15


def test_a_channel_counts_as_read_when_any_of_its_flattened_inputs_is():
    model = build_model("convnet", 10, SHAPE, seed=0)
    mask = {k: m.clone() for k, m in Mask.ones(model).items()}
    mask["fc1.weight"][:] = False
    mask["fc1.weight"][7, 5 * 16 + 15] = True  # the last input of conv2's channel 5
    rows = rows_by_layer(model, Mask(mask))
    assert rows["conv2.weight"]["width"] == 1 and rows["conv2.weight"]["in_width"] == 64
    assert rows["fc1.weight"]["width"] == 1


def test_in_degrees_count_kernel_elements_and_input_channels():
    m = torch.zeros(2, 3, 2, 2, dtype=torch.bool)
    m[0, 0] = True  # 4 elements from 1 channel
    m[0, 2, 1, 1] = True
    m[1, 1, 0] = True  # 2 elements from 1 channel
    elements, channels = in_degrees(Mask({"c": m, "l": torch.eye(3, dtype=torch.bool)}))["c"]
    assert elements.tolist() == [5, 2] and channels.tolist() == [2, 1]
    assert [t.tolist() for t in in_degrees(Mask({"l": torch.eye(3, dtype=torch.bool)}))["l"]] == [[1, 1, 1]] * 2


# ---- path-kernel trace


def brute_force_trace(weights: list[torch.Tensor], masks: list[torch.Tensor]) -> float:
    """Sum over input-output paths of sum over their kept edges of the product of the other edges'
    phi: the derivative of R = sum of all path products with respect to every kept phi, added up."""
    phi = [(w.detach().double() ** 2) * m for w, m in zip(weights, masks)]
    total = 0.0
    for path in itertools.product(*(range(n) for n in [weights[0].shape[1]] + [w.shape[0] for w in weights])):
        edges = [p[path[d + 1], path[d]] for d, p in enumerate(phi)]
        for d, m in enumerate(masks):
            if m[path[d + 1], path[d]]:
                total += float(torch.prod(torch.stack(edges[:d] + edges[d + 1:])))
    return total


def test_path_kernel_trace_matches_a_sum_over_paths():
    model = MLP(2, (1, 1, 3), hidden=(4, 3))
    g = torch.Generator().manual_seed(1)
    init_weights(model, g)  # biases 0, so phi-paths are all of R
    mask = Mask({k: torch.rand(w.shape, generator=g) < 0.6 for k, w in
                 [("hidden.0.weight", model.hidden[0].weight), ("hidden.1.weight", model.hidden[1].weight),
                  ("fc.weight", model.fc.weight)]})
    layers = [model.hidden[0], model.hidden[1], model.fc]
    expected = brute_force_trace([m.weight for m in layers], list(mask.values()))
    assert path_kernel_trace(model, mask, (1, 1, 3)) == pytest.approx(expected, rel=1e-12)
    assert model.hidden[0].weight.dtype == torch.float32  # the model itself is untouched


def test_path_kernel_trace_grows_with_the_mask_through_batchnorm():
    model = build_model("convnet", 10, SHAPE, seed=0)
    g = torch.Generator().manual_seed(0)
    small = Mask({k: torch.rand(m.shape, generator=g) < 0.1 for k, m in Mask.ones(model).items()})
    large = Mask({k: m | (torch.rand(m.shape, generator=g) < 0.2) for k, m in small.items()})
    assert 0 < path_kernel_trace(model, small, SHAPE) < path_kernel_trace(model, large, SHAPE)


# ---- overlap, summary, table


def test_overlap_of_two_masks():
    a = Mask({"w": torch.tensor([1, 1, 1, 1, 0, 0], dtype=torch.bool)})
    b = Mask({"w": torch.tensor([0, 0, 1, 1, 1, 0], dtype=torch.bool)})
    assert overlap(a, b) == {"kept_a": 4, "kept_b": 3, "shared": 2, "overlap": 0.5, "jaccard": 0.4}
    with pytest.raises(ValueError, match="different tensors"):
        overlap(a, Mask({"v": a["w"]}))
    with pytest.raises(ValueError, match="shape of w"):
        overlap(a, Mask({"w": torch.ones(3, dtype=torch.bool)}))


def test_summary_and_table():
    model = tiny_mlp()
    mask = Mask({"hidden.0.weight": torch.ones(3, 4), "fc.weight": torch.tensor([[1, 0, 0]] * 3)})
    totals = summary(model, mask, (1, 2, 2))
    assert totals["min_width_ratio"] == pytest.approx(1 / 3) and totals["min_width_layer"] == "hidden.0.weight"
    assert (totals["kept"], totals["total"], totals["dead"]) == (15, 21, 2)
    text = format_table(layer_table(model, mask, (1, 2, 2)), totals)
    header, first, second = text.splitlines()[:3]
    assert header.split()[:3] == ["layer", "shape", "kept"] and first.startswith("hidden.0.weight")
    assert header.index("kept") + len("kept") == first.index("12") + 2  # numbers right-aligned under headers
    assert "min_width_layer" in text and "hidden.0.weight" in text and second.startswith("fc.weight")
