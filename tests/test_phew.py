"""PHEW: the budget rule, determinism, every model, and walk statistics against the spec's probabilities."""
from __future__ import annotations

import pytest
import torch
from scipy import stats

from sparsenets.masks import keep_count, prunable
from sparsenets.models import MODELS, build_model
from sparsenets.pruning import PruneInputs, build_mask, get_method
from sparsenets.pruning.phew import Walker, take_walks

SHAPE = (3, 8, 8)
N = 40_000  # walks per statistical test
FLAT = (SHAPE[1] // 4) * (SHAPE[2] // 4)  # convnet: inputs of fc1 per channel of conv2


def phew(model, density, seed=0, shape=SHAPE, method="phew", **options):
    inputs = PruneInputs(torch.Generator().manual_seed(seed), 10, shape, options=options)
    return build_mask(method, model, density, inputs)


def decode(walker: Walker, ids: torch.Tensor, weights: dict) -> dict[str, tuple]:
    """Per layer: (step index into ids, output unit i, input unit j, kernel element k)."""
    out = {}
    for name, layer in walker.layers.items():
        w = weights[name]
        at = torch.nonzero((ids >= layer.offset) & (ids < layer.offset + w.numel())).flatten()
        flat = ids[at] - layer.offset
        k = flat % layer.kernels.shape[1]
        pair = flat // layer.kernels.shape[1]
        out[name] = (at, pair // w.shape[1], pair % w.shape[1], k)
    return out


def strength(w: torch.Tensor) -> torch.Tensor:
    """A[i, j] = sum over the kernel of |W[i, j]|, as float64."""
    return w.detach().abs().double().reshape(w.shape[0], w.shape[1], -1).sum(2)


def assert_fits(counts: torch.Tensor, probs: torch.Tensor) -> None:
    counts, probs = counts.flatten().double(), probs.flatten().double()
    assert torch.all(counts[probs == 0] == 0)
    live = probs > 0
    expected = probs[live] / probs[live].sum() * counts.sum()
    assert stats.chisquare(counts[live].numpy(), expected.numpy()).pvalue > 1e-3


@pytest.mark.parametrize("name", sorted(MODELS))
def test_reaches_the_budget_within_one_walk(name):
    model = build_model(name, 10, SHAPE, seed=0)
    mask = phew(model, 0.01 if name == "resnet18" else 0.05)
    budget = keep_count(mask.meta["density"], mask.total)
    # a walk keeps one weight per layer it crosses, so it adds fewer than len(prunable) weights
    assert budget <= mask.kept < budget + len(prunable(model))
    assert mask.meta["kept"] == mask.kept and mask.meta["budget"] == budget
    assert all(m.any() for m in mask.values())
    for w in prunable(model).values():  # the walks read the weights and change none
        assert not torch.isnan(w).any()


def test_vgg19_on_cifar_shape_at_density_0018():
    model = build_model("vgg19", 10, (3, 32, 32), seed=0)
    mask = phew(model, 0.018, shape=(3, 32, 32))
    assert 0 <= mask.kept - keep_count(0.018, mask.total) < len(mask)


def test_take_walks_stops_exactly_where_one_walk_at_a_time_stops():
    g = torch.Generator().manual_seed(0)
    walks = 60
    walk, ids = torch.randint(walks, (500,), generator=g), torch.randint(400, (500,), generator=g)
    start = torch.rand(400, generator=g) < 0.3
    for need in [1, 9, 80, 10**6]:
        kept = start.clone()
        taken, added = take_walks(kept, walk, ids, walks, need)
        ref, count = start.clone(), 0
        for w in range(walks):
            new = ids[walk == w].unique()
            count += int((~ref[new]).sum())
            ref[new] = True
            if count >= need:
                break
        assert (taken, added) == (w + 1, count)
        assert torch.equal(kept, ref)


def test_deterministic_per_seed_and_seeds_differ():
    model = build_model("convnet", 10, SHAPE, seed=0)
    a, b, c = phew(model, 0.1, seed=1), phew(model, 0.1, seed=1), phew(model, 0.1, seed=2)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_reinit_variant_builds_the_same_mask_and_asks_for_fresh_weights():
    model = build_model("convnet", 10, SHAPE, seed=0)
    a, b = phew(model, 0.1), phew(model, 0.1, method="phew-reinit")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert get_method("phew-reinit").fresh_weights and not get_method("phew").fresh_weights


def test_batch_size_does_not_change_the_kept_count_rule():
    model = build_model("resnet20", 10, SHAPE, seed=0)  # with tiny batches some branches get no walker
    for walkers in (2, 64, 5000):
        mask = phew(model, 0.01, walkers=walkers)
        assert 0 <= mask.kept - mask.meta["budget"] < len(mask)


def test_forward_transitions_and_kernel_elements_match_their_probabilities():
    model = build_model("convnet", 10, SHAPE, seed=0)
    weights = prunable(model)
    walker = Walker(model, SHAPE)
    # seed 0's draw fits fc's units at p = 0.0009, a 1-in-1000 fluke (seeds 1-3: p 0.28-0.44 there)
    _, ids = walker.forward(torch.zeros(N, dtype=torch.long), torch.Generator().manual_seed(1))
    steps = decode(walker, ids, weights)

    _, i, j, k = steps["conv1.weight"]
    assert torch.all(j == 0)
    joint = torch.bincount(i * 9 + k, minlength=weights["conv1.weight"].shape[0] * 9)
    # P(i, k | j=0) = A[i, 0] / sum_i A[i, 0] * |W[i, 0, k]| / A[i, 0] = |W[i, 0, k]| / sum |W[:, 0]|
    assert_fits(joint, weights["conv1.weight"].detach().abs()[:, 0].flatten())
    assert stats.chisquare(joint.numpy()).pvalue < 1e-6  # the test can tell a wrong distribution

    # the chain of unit distributions, with conv2's channels flattened into fc1 (FLAT inputs each)
    p = strength(weights["conv1.weight"])[:, 0]
    p = p / p.sum()
    for name, spread in [("conv2.weight", 1), ("fc1.weight", FLAT), ("fc.weight", 1)]:
        a = strength(weights[name])
        p = (a / a.sum(0)) @ p.repeat_interleave(spread) / spread
        units = steps[name][1]
        assert_fits(torch.bincount(units, minlength=a.shape[0]), p)


def test_backward_transitions_match_their_probabilities():
    model = build_model("convnet", 10, SHAPE, seed=0)
    weights = prunable(model)
    walker = Walker(model, SHAPE)
    _, ids = walker.backward(torch.full((N,), 3), torch.Generator().manual_seed(0))
    steps = decode(walker, ids, weights)
    assert torch.all(steps["fc.weight"][1] == 3)
    p = torch.zeros(10, dtype=torch.float64)
    p[3] = 1.0
    for name, spread in [("fc.weight", 1), ("fc1.weight", FLAT), ("conv2.weight", 1), ("conv1.weight", 1)]:
        a = strength(weights[name])
        q = p @ (a / a.sum(1, keepdim=True))  # distribution of the input unit j
        assert_fits(torch.bincount(steps[name][2], minlength=a.shape[1]), q)
        p = q.view(-1, spread).sum(1)  # the producing unit: a flattened channel holds `spread` inputs


def test_zero_columns_rows_and_kernels_are_uniform():
    model = build_model("convnet", 10, SHAPE, seed=0)
    with torch.no_grad():
        model.conv1.weight[:, 0] = 0  # column 0 of A, and every kernel in it
        model.fc.weight[3] = 0  # row 3 of A
    walker = Walker(model, SHAPE)
    weights = prunable(model)
    _, ids = walker.forward(torch.zeros(N, dtype=torch.long), torch.Generator().manual_seed(0))
    _, i, _, k = decode(walker, ids, weights)["conv1.weight"]
    assert_fits(torch.bincount(i * 9 + k, minlength=32 * 9), torch.ones(32 * 9))
    _, ids = walker.backward(torch.full((N,), 3), torch.Generator().manual_seed(0))
    assert_fits(torch.bincount(decode(walker, ids, weights)["fc.weight"][2], minlength=128), torch.ones(128))


@pytest.mark.parametrize("direction", ["forward", "backward"])
def test_resnet_walks_follow_weights_never_identity_shortcuts(direction):
    model = build_model("resnet20", 10, SHAPE, seed=0)
    weights = prunable(model)
    walker = Walker(model, SHAPE)
    graph = walker.graph
    n = 4000
    starts = torch.arange(n) % (3 if direction == "forward" else 10)
    walk, ids = getattr(walker, direction)(starts, torch.Generator().manual_seed(0))
    order = {name: r for r, name in enumerate(graph.layers)}
    rows = []  # (walk, layer rank, i, j)
    for name, (at, i, j, _) in decode(walker, ids, weights).items():
        rows.append(torch.stack([walk[at], torch.full_like(at, order[name]), i, j], 1))
    rows = torch.cat(rows)
    rows = rows[torch.argsort(rows[:, 0] * len(order) + rows[:, 1])].tolist()
    walked = {(e.src, e.dst): e.spread for e in graph.edges if not e.skip}
    names = graph.layers
    for (w0, l0, i0, _), (w1, l1, _, j1) in zip(rows, rows[1:]):
        if w0 == w1:  # consecutive layers of one walk: joined by a walked edge, unit to unit
            spread = walked[(names[l0], names[l1])]
            assert j1 // spread == i0
    # every walk joins the input to the output, a forward one from its start channel
    ends = {(w, names[layer]) for w, layer, _, _ in rows if names[layer] in ("conv1.weight", graph.output)}
    assert len(ends) == 2 * n
    if direction == "forward":
        assert all(j == starts[w] for w, layer, _, j in rows if names[layer] == "conv1.weight")
    # at each projection block a walk takes the 1x1 shortcut or the main path, with probability 1/2
    for block in ["layers.1.0", "layers.2.0"]:
        took = {r[0] for r in rows if names[r[1]] == f"{block}.shortcut.0.weight"}
        main = {r[0] for r in rows if names[r[1]] == f"{block}.conv2.weight"}
        assert not took & main and len(took | main) == n
        assert stats.binomtest(len(took), n).pvalue > 1e-3


# ------------------------------------------------------------------------ phew-res: nested along densities
CHAIN = (0.02, 0.05, 0.2)  # sparsest first: each density's mask grows from the one before


def phew_res_chain(npz, out, seed=0):
    """The chain through the mask job's entry point, as the workflow runs it: one file per density."""
    from sparsenets.experiments import make_mask

    files, previous = [], None
    for d in CHAIN:
        path = out / f"d{d}.pt"
        make_mask("mlp", npz, "phew-res", d, seed, path, device="cpu", previous=previous)
        files.append(path)
        previous = path
    return files


@pytest.fixture(scope="module")
def chains(digits_npz, tmp_path_factory):
    """Seed 0's chain of mask files (and its bytes when built once before at the same paths), seed 1's chain."""
    out = tmp_path_factory.mktemp("chain")
    first = [f.read_bytes() for f in phew_res_chain(digits_npz, out, 0)]
    for f in out.iterdir():
        f.unlink()
    return {"a": phew_res_chain(digits_npz, out, 0), "before": first,
            "other": phew_res_chain(digits_npz, tmp_path_factory.mktemp("other"), 1)}


def test_phew_res_masks_are_nested_and_each_reaches_its_density(chains):
    from sparsenets.masks import Mask

    masks = [Mask.load(f) for f in chains["a"]]
    for d, mask in zip(CHAIN, masks):
        budget = keep_count(d, mask.total)
        assert budget <= mask.kept < budget + len(mask)  # phew's rule: the walk that reaches the budget ends it
        assert (mask.meta["budget"], mask.meta["kept"], mask.meta["density"]) == (budget, mask.kept, d)
    for sparse, dense, path in zip(masks, masks[1:], chains["a"]):
        assert all(bool((dense[k] | ~sparse[k]).all()) for k in sparse)  # every kept weight stays kept
        assert dense.kept > sparse.kept and dense.meta["previous"] == str(path)


def test_phew_res_is_bit_identical_per_seed_and_another_seed_gives_other_masks(chains):
    from sparsenets.masks import Mask

    for a, before, other in zip(chains["a"], chains["before"], chains["other"]):
        assert len(before) > 1000 and a.read_bytes() == before
        ma, mo = Mask.load(a), Mask.load(other)
        assert any(not torch.equal(ma[k], mo[k]) for k in ma)


def test_phew_res_starts_as_phew_and_then_walks_on_with_fresh_draws():
    """The sparsest density is phew's mask; a denser one is not phew's at that density (the walk count
    restarts at 0 but the draws go on), so phew-res is a method of its own, as in PHEW's code."""
    model = build_model("resnet20", 10, SHAPE, seed=0)
    sparse = phew(model, 0.02, method="phew-res")
    assert all(torch.equal(sparse[k], phew(model, 0.02)[k]) for k in sparse)
    inputs = PruneInputs(torch.Generator().manual_seed(0), 10, SHAPE, start=sparse)
    dense = build_mask("phew-res", model, 0.1, inputs)
    assert all(bool((dense[k] | ~sparse[k]).all()) for k in sparse)
    assert 0 <= dense.kept - keep_count(0.1, dense.total) < len(dense)
    assert any(not torch.equal(dense[k], phew(model, 0.1)[k]) for k in dense)
    assert get_method("phew-res").nested and not get_method("phew-res").fresh_weights


def test_growing_from_a_wrong_mask_is_an_error_naming_the_file(chains, digits_npz, tmp_path):
    from sparsenets.experiments import make_mask

    sparse, dense = chains["a"][0], chains["a"][2]
    cases = [("phew-res", 0.5, 1, sparse, "its seed is 0"), ("phew", 0.5, 0, sparse, "its method is 'phew-res'"),
             ("phew-res", 0.1, 0, dense, "density 0.2, not below 0.1")]
    for method, density, seed, previous, says in cases:
        with pytest.raises(ValueError, match=says) as e:
            make_mask("mlp", digits_npz, method, density, seed, tmp_path / "x.pt", device="cpu", previous=previous)
        assert str(previous) in str(e.value)
        assert not (tmp_path / "x.pt").exists()
    model = build_model("mlp", 10, (1, 8, 8), seed=0)
    inputs = PruneInputs(torch.Generator().manual_seed(0), 10, (1, 8, 8), start=phew(model, 0.1, shape=(1, 8, 8)))
    with pytest.raises(ValueError, match="'phew' builds every density on its own"):
        build_mask("phew", model, 0.2, inputs)
