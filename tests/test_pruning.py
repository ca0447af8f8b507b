"""Pruning at initialisation: every method on tiny models, plus each method's defining property."""
from __future__ import annotations

import hashlib

import pytest
import torch
from torch.nn import functional as F

from sparsenets.masks import Mask, keep_count, prunable
from sparsenets.models import build_model
from sparsenets.pruning import PruneInputs, build_mask, get_method
from sparsenets.pruning.random import (erk_densities, erk_spread, first_layer_dense_densities, layer_counts,
                                       uniform_densities)
from sparsenets.pruning.synflow import smallest

SHAPES = {"mlp": (1, 8, 8), "convnet": (1, 8, 8), "resnet20": (3, 8, 8)}
METHODS = ["random", "random-erk", "magnitude", "snip", "grasp", "synflow", "synflow-l2"]
CLASSES = 10


def make_inputs(shape: tuple[int, int, int], seed: int = 0, dtype: torch.dtype = torch.float32,
                **options: object) -> PruneInputs:
    """Random 'training images' drawn from the mask generator, as the real data source does."""
    generator = torch.Generator().manual_seed(seed)

    def batches(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.randn(n, *shape, generator=generator, dtype=dtype)
        return x, torch.randint(CLASSES, (n,), generator=generator)

    return PruneInputs(generator, CLASSES, shape, batches=batches, options={"iterations": 10, **options})


def build(method: str, model_name: str, density: float, seed: int = 0) -> Mask:
    shape = SHAPES[model_name]
    return build_mask(method, build_model(model_name, CLASSES, shape, seed=0), density, make_inputs(shape, seed))


def same(a: Mask, b: Mask) -> bool:
    return list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("model_name", SHAPES)
@pytest.mark.parametrize("method", METHODS)
def test_exact_density_and_model_untouched(method: str, model_name: str) -> None:
    shape = SHAPES[model_name]
    model = build_model(model_name, CLASSES, shape, seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for density in (0.1, 0.013):
        mask = build_mask(method, model, density, make_inputs(shape))
        mask.check_model(model)
        assert mask.kept == keep_count(density, mask.total)
    assert model.training
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) and before[k].dtype == after[k].dtype for k in before)


@pytest.mark.parametrize("model_name", SHAPES)
@pytest.mark.parametrize("method", METHODS)
def test_same_seed_same_mask(method: str, model_name: str) -> None:
    assert same(build(method, model_name, 0.1, seed=3), build(method, model_name, 0.1, seed=3))


@pytest.mark.parametrize("method", ["random", "random-erk", "snip", "grasp"])
def test_seed_changes_random_and_data_driven_masks(method: str) -> None:
    assert not same(build(method, "mlp", 0.1, seed=0), build(method, "mlp", 0.1, seed=1))


def test_unknown_method_is_named() -> None:
    with pytest.raises(ValueError, match="'snipp'"):
        build("snipp", "mlp", 0.1)


@pytest.mark.parametrize("model_name", ["mlp", "resnet20"])
@pytest.mark.parametrize("density", [0.02, 0.3, 0.7])
def test_erk_densities_capped_and_on_budget(model_name: str, density: float) -> None:
    model = build_model(model_name, CLASSES, SHAPES[model_name])
    sizes = {k: w.numel() for k, w in prunable(model).items()}
    layer = erk_densities(model, density)
    assert all(0 < d <= 1 for d in layer.values())
    assert sum(layer[k] * n for k, n in sizes.items()) == pytest.approx(density * sum(sizes.values()))
    if density == 0.7:
        assert 1.0 in layer.values()  # some layers had to be made dense
    mask = build_mask("random-erk", model, density, make_inputs(SHAPES[model_name]))
    assert all(abs(int(mask[k].sum()) - layer[k] * n) < 1 for k, n in sizes.items())


@pytest.mark.parametrize("density", [0.8**k for k in range(3, 19)])
def test_layer_counts_hit_the_global_budget(density: float) -> None:
    model = build_model("resnet20", CLASSES, SHAPES["resnet20"])
    sizes = {k: w.numel() for k, w in prunable(model).items()}
    for layer in (uniform_densities(model, density), erk_densities(model, density)):
        counts = layer_counts(model, layer, density)
        assert sum(counts.values()) == keep_count(density, sum(sizes.values()))
        assert all(abs(counts[k] - layer[k] * n) < 1 for k, n in sizes.items())


# -------------------------------------------------------------- layer policy: first layer dense

@pytest.mark.parametrize("model_name", ["convnet", "resnet20"])
@pytest.mark.parametrize("density", [0.02, 0.1, 0.5, 1.0])
def test_first_layer_dense_keeps_it_whole_and_spreads_the_rest_uniformly(model_name: str, density: float) -> None:
    model = build_model(model_name, CLASSES, SHAPES[model_name], seed=0)
    mask = build_mask("random", model, density, make_inputs(SHAPES[model_name], first_layer_dense=True))
    sizes = {k: w.numel() for k, w in prunable(model).items()}
    first, *rest = sizes
    assert mask.kept == keep_count(density, mask.total)
    assert bool(mask[first].all()) and mask.meta["first_layer_dense"]
    rest_density = (mask.kept - sizes[first]) / sum(sizes[k] for k in rest)
    assert all(abs(int(mask[k].sum()) - rest_density * sizes[k]) < 1 for k in rest)


@pytest.mark.parametrize("density", [0.02, 0.1, 0.7])
def test_first_layer_dense_erk_gives_the_rest_erk_densities(density: float) -> None:
    model = build_model("resnet20", CLASSES, SHAPES["resnet20"], seed=0)
    mask = build_mask("random-erk", model, density, make_inputs(SHAPES["resnet20"], first_layer_dense=True))
    weights = prunable(model)
    first, *rest = weights
    layer = first_layer_dense_densities(model, density, erk_spread)
    assert mask.kept == keep_count(density, mask.total) and bool(mask[first].all())
    assert all(abs(int(mask[k].sum()) - layer[k] * weights[k].numel()) < 1 for k in rest)
    # ERK over the rest: density / ((sum of dims)/(product of dims)) is one constant for the layers below 1
    scale = {round(layer[k] * weights[k].numel() / sum(weights[k].shape), 9) for k in rest if layer[k] < 1}
    assert len(scale) == 1


def test_first_layer_dense_budget_below_the_first_layer_is_named() -> None:
    model = build_model("convnet", CLASSES, SHAPES["convnet"], seed=0)  # conv1: 288 of 52,768 weights
    for method in ("random", "random-erk"):
        with pytest.raises(ValueError, match=r"density 0\.005 keeps 264 weights.*288.*'conv1\.weight'"):
            build_mask(method, model, 0.005, make_inputs(SHAPES["convnet"], first_layer_dense=True))
    with pytest.raises(ValueError, match="first_layer_dense must be true or false"):
        build_mask("random", model, 0.1, make_inputs(SHAPES["convnet"], first_layer_dense="yes"))


# sha256 of the masks' bits, computed before option first_layer_dense existed: the global policy is unchanged
GLOBAL_MASKS = {"random": "90470dad073229e44e54cdb9aa248466a59b1f175f727cc8bfdf7ad097c31fde",
                "random-erk": "aa66f6faa574332606fa47205fd0d8be39a2297c8fd51e05899ce82bcca63f03"}


@pytest.mark.parametrize("method", GLOBAL_MASKS)
@pytest.mark.parametrize("options", [{}, {"first_layer_dense": False}])
def test_global_policy_masks_are_bit_identical_to_before(method: str, options: dict) -> None:
    model = build_model("resnet20", CLASSES, SHAPES["resnet20"], seed=0)
    mask = build_mask(method, model, 0.1, PruneInputs(torch.Generator().manual_seed(0), CLASSES, SHAPES["resnet20"],
                                                      options=options))
    digest = hashlib.sha256(b"".join(mask[k].flatten().numpy().tobytes() for k in mask)).hexdigest()
    assert digest == GLOBAL_MASKS[method] and "first_layer_dense" not in mask.meta


def test_magnitude_keeps_the_largest_weights() -> None:
    model = build_model("convnet", CLASSES, SHAPES["convnet"], seed=0)
    mask = build_mask("magnitude", model, 0.1, make_inputs(SHAPES["convnet"]))
    weights = prunable(model)
    kept = torch.cat([weights[k].abs()[mask[k]] for k in mask])
    pruned = torch.cat([weights[k].abs()[~mask[k]] for k in mask])
    assert kept.min() >= pruned.max()


@pytest.mark.parametrize("method", ["snip", "grasp"])
def test_data_methods_draw_ten_images_per_class(method: str) -> None:
    inputs = make_inputs(SHAPES["mlp"], batch_size=32)
    calls: list[int] = []
    draw = inputs.batches

    def recording(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        calls.append(n)
        return draw(n)

    inputs.batches = recording
    assert get_method(method).needs_data
    build_mask(method, build_model("mlp", CLASSES, SHAPES["mlp"], seed=0), 0.1, inputs)
    assert calls == [10 * CLASSES]


def test_snip_scores_are_gradient_times_weight() -> None:
    model = build_model("mlp", CLASSES, SHAPES["mlp"], seed=0)
    inputs = make_inputs(SHAPES["mlp"], seed=5)
    mask = build_mask("snip", model, 0.05, inputs)
    x, y = make_inputs(SHAPES["mlp"], seed=5).batches(10 * CLASSES)
    weights = prunable(model)
    grads = torch.autograd.grad(F.cross_entropy(model(x), y), list(weights.values()))
    assert same(mask, Mask.from_scores({k: (g * w).abs() for (k, w), g in zip(weights.items(), grads)}, 0.05))


def test_grasp_keeps_the_highest_weight_times_hessian_gradient() -> None:
    """Hg by central differences of the gradient, independently of the double backward: a flipped
    sign would keep the opposite end of the ranking."""
    model = build_model("mlp", CLASSES, SHAPES["mlp"], seed=0).double()
    mask = build_mask("grasp", model, 0.05, make_inputs(SHAPES["mlp"], seed=2, dtype=torch.float64))
    x, y = make_inputs(SHAPES["mlp"], seed=2, dtype=torch.float64).batches(10 * CLASSES)
    weights = list(prunable(model).values())

    def grad() -> list[torch.Tensor]:
        return list(torch.autograd.grad(F.cross_entropy(model(x) / 200, y), weights))

    g, eps = grad(), 1e-3
    with torch.no_grad():
        torch._foreach_add_(weights, g, alpha=eps)
    plus = grad()
    with torch.no_grad():
        torch._foreach_add_(weights, g, alpha=-2 * eps)
    minus = grad()
    with torch.no_grad():
        torch._foreach_add_(weights, g, alpha=eps)
    scores = {k: w.detach() * (p - m) / (2 * eps) for k, w, p, m in zip(mask, weights, plus, minus)}
    expected = Mask.from_scores(scores, 0.05)
    overlap = sum(int((mask[k] & expected[k]).sum()) for k in mask) / mask.kept
    assert overlap > 0.99


@pytest.mark.parametrize("method", ["synflow", "synflow-l2"])
def test_synflow_prunes_weights_off_input_output_paths(method: str) -> None:
    """Scores are taken before each round prunes, so the last round can strand a few weights;
    nearly all kept weights must still lie on a live path, and none may touch a dead unit."""
    model = build_model("mlp", CLASSES, SHAPES["mlp"], seed=0)
    with torch.no_grad():
        model.hidden[0].weight[:50] = 0  # hidden units 0-49 carry no flow
    mask = build_mask(method, model, 0.005, make_inputs(SHAPES["mlp"], iterations=100))
    assert not mask["hidden.0.weight"][:50].any() and not mask["hidden.1.weight"][:, :50].any()
    assert fraction_on_paths(mask) > 0.95
    assert fraction_on_paths(build("random", "mlp", 0.005)) < 0.1  # the check can fail


def fraction_on_paths(mask: Mask) -> float:
    """For an MLP mask: the share of kept weights joining an input-reachable unit to an
    output-reaching one."""
    layers = [mask[k].double() for k in mask]
    reach = [torch.ones(layers[0].shape[1], dtype=torch.float64)]
    for m in layers:
        reach.append((m @ reach[-1] > 0).double())
    back = [torch.ones(layers[-1].shape[0], dtype=torch.float64)]
    for m in reversed(layers):
        back.insert(0, (m.T @ back[0] > 0).double())
    on = sum(int((m.bool() & (back[i + 1][:, None] * reach[i][None, :] > 0)).sum()) for i, m in enumerate(layers))
    return on / mask.kept


def test_synflow_is_scale_free_beyond_float32_range() -> None:
    """Scaling the three layers by 2^47 scales R by 2^141, past float32's range, and every score
    exactly alike: the mask must not change."""
    model = build_model("mlp", CLASSES, SHAPES["mlp"], seed=0)
    mask = build_mask("synflow", model, 0.05, make_inputs(SHAPES["mlp"]))
    with torch.no_grad():
        torch._foreach_mul_(list(prunable(model).values()), 2.0**47)
    assert same(mask, build_mask("synflow", model, 0.05, make_inputs(SHAPES["mlp"])))


@pytest.mark.parametrize("misled", [False, True])
def test_smallest_breaks_ties_like_a_stable_sort(misled: bool) -> None:
    """Scores with many ties; `misled` puts the smallest value exactly where the strided sample
    looks (every 4th entry), so its bracket is too tight and the full selection must take over."""
    n = 300_000
    x = torch.randint(0, 7, (n,), generator=torch.Generator().manual_seed(0)).double()
    if misled:
        x[::4] = -1
    for d in (0, 1, n // 7, n // 2, n - 1, n):
        expected = torch.sort(x, descending=True, stable=True).indices[n - d:]
        assert torch.equal(smallest(x, d).sort().values, expected.sort().values)
