"""Training-time structures (DNW, RigL) driven through the hooks in the order the training loop calls them."""
from __future__ import annotations

import io
from typing import Callable

import pytest
import torch
from torch.nn import functional as F

from sparsenets.masks import Mask, keep_count, prunable
from sparsenets.models import build_model
from sparsenets.pruning import PruneInputs, build_mask
from sparsenets.topology import Schedule, Topology, make_topology

SHAPE = (1, 8, 8)
EPOCH = 5  # steps per epoch
SGD = {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-4}
Watch = Callable[[str, int], None]


def setup(topology: str, arch: str = "convnet", density: float = 0.2, epochs: int = 4, sgd: dict = SGD,
          mask_options: dict | None = None, **options):
    """Model, optimizer and topology as the training loop builds them, from a `random` mask."""
    model = build_model(arch, 10, SHAPE, seed=0)
    gen = torch.Generator().manual_seed(1)
    mask = build_mask("random", model, density, PruneInputs(gen, 10, SHAPE, options=mask_options or {}))
    opt = torch.optim.SGD(model.parameters(), **sgd)
    topo = make_topology(topology, model, mask, opt, Schedule(EPOCH, epochs, gen), **options)
    return model, opt, topo


def batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1000 + step)
    return torch.randn(16, *SHAPE, generator=gen), torch.randint(0, 10, (16,), generator=gen)


def run(model, opt, topo: Topology, steps: range, watch: Watch = lambda phase, step: None) -> None:
    """The training loop's call order; `watch(phase, step)` sees the state between the hooks."""
    for step in steps:
        x, y = batch(step)
        watch("start", step)
        topo.before_forward(step)
        watch("forward", step)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=False)
        loss.backward()
        watch("backward", step)
        topo.before_step(step)
        opt.step()
        watch("optimized", step)
        topo.after_step(step)
        watch("end", step)
        if (step + 1) % EPOCH == 0:
            topo.end_epoch(step // EPOCH)
            with topo.evaluating():
                model.eval()
                model(batch(-1)[0])
                model.train()


def weights(model) -> dict[str, torch.Tensor]:
    return {k: w.detach().clone() for k, w in prunable(model).items()}


def momentum(model, opt) -> dict[str, torch.Tensor]:
    return {k: opt.state[w]["momentum_buffer"] for k, w in prunable(model).items()}


def counts(mask: Mask) -> dict[str, int]:
    return {k: int(m.sum()) for k, m in mask.items()}


def assert_pruned_zero(model, opt, mask: Mask) -> None:
    for k, w in prunable(model).items():
        assert not w[~mask[k]].any(), k
        if w in opt.state:
            assert not opt.state[w]["momentum_buffer"][~mask[k]].any(), k


# ---------------------------------------------------------------- RigL

def test_rigl_rewires_only_on_schedule_at_constant_layer_counts():
    model, opt, topo = setup("rigl", epochs=8, delta_t=5, end_fraction=0.5)  # T_end = 20: steps 5, 10, 15
    start = counts(topo.mask)
    masks = {}

    def watch(phase, step):
        if phase == "end":
            masks[step] = topo.mask
            assert counts(topo.mask) == start
            assert_pruned_zero(model, opt, topo.mask)

    run(model, opt, topo, range(40), watch)
    changed = {s for s in range(1, 40) if any(not torch.equal(masks[s][k], masks[s - 1][k]) for k in start)}
    assert changed == {5, 10, 15}
    for s in changed:  # at most the α_t fraction of each layer moves
        for k, n in start.items():
            moved = int((masks[s][k] & ~masks[s - 1][k]).sum())
            assert moved <= keep_count(topo.drop_fraction(s), n)


def test_rigl_grows_by_dense_gradient_at_zero_with_zero_momentum():
    model, opt, topo = setup("rigl", delta_t=3, end_fraction=1.0)
    seen = {}

    def watch(phase, step):
        if phase == "backward":
            seen["grad"] = {k: w.grad.clone() for k, w in prunable(model).items()}
            seen["old"] = topo.mask
        elif phase == "optimized":
            seen["w"] = weights(model)
        elif phase == "end" and topo.rewires_at(step):
            old, new, buf = seen["old"], topo.mask, momentum(model, opt)
            for k, w in weights(model).items():
                grown, dropped, out = new[k] & ~old[k], old[k] & ~new[k], ~new[k]
                assert grown.any() and dropped.any(), k
                assert not w[grown].any() and not buf[k][grown].any(), k
                g = seen["grad"][k].abs()
                assert g[grown].min() >= g[out].max(), k  # the largest dense gradients won
                n_keep = counts(old)[k] - keep_count(topo.drop_fraction(step), counts(old)[k])
                kth = seen["w"][k].abs()[old[k]].sort(descending=True).values[n_keep - 1]
                assert seen["w"][k].abs()[dropped].max() <= kth, k  # only the smallest were dropped
            seen["rewired"] = seen.get("rewired", 0) + 1

    run(model, opt, topo, range(12), watch)
    assert seen["rewired"] == 3


# ---------------------------------------------------------------- DNW

def test_dnw_forward_uses_exact_top_k_and_gradients_reach_pruned_weights():
    lr = 0.05
    model, opt, topo = setup("dnw", arch="mlp", sgd={"lr": lr})  # plain SGD: the update is -lr * grad
    first = topo.mask
    k = counts(first)
    seen = {}

    def watch(phase, step):
        if phase == "start":
            seen["dense"] = weights(model)
        elif phase == "forward":
            for name, w in weights(model).items():
                dense, m = seen["dense"][name], topo.mask[name]
                assert int(m.sum()) == k[name] and torch.equal(w, dense * m), name
                assert dense.abs()[m].min() >= dense.abs()[~m].max(), name
            seen["mask"] = topo.mask
        elif phase == "backward":
            seen["grad"] = {n: w.grad.clone() for n, w in prunable(model).items()}
            assert all(g[~seen["mask"][n]].any() for n, g in seen["grad"].items())
        elif phase == "end":  # straight-through: every dense weight moves by the masked forward's gradient
            for name, w in weights(model).items():
                torch.testing.assert_close(w, seen["dense"][name] - lr * seen["grad"][name], rtol=0, atol=1e-7)

    run(model, opt, topo, range(20), watch)
    assert any(not torch.equal(topo.mask[n], first[n]) for n in k)  # dead weights came back
    assert counts(topo.mask) == k


def test_dnw_epoch_mask_and_evaluation_follow_the_dense_weights():
    model, opt, topo = setup("dnw")
    run(model, opt, topo, range(3))
    topo.end_epoch(0)
    dense, mask = weights(model), topo.mask  # what the loop records after the epoch
    assert any(bool(w[~mask[n]].any()) for n, w in dense.items())
    for n, w in dense.items():
        assert dense[n].abs()[mask[n]].min() >= dense[n].abs()[~mask[n]].max(), n
    with topo.evaluating():
        assert all(torch.equal(w, dense[n] * mask[n]) for n, w in weights(model).items())
    assert all(torch.equal(w, dense[n]) for n, w in weights(model).items())


def test_dnw_frozen_from_the_start_is_static_training_on_the_initial_top_k():
    model, opt, topo = setup("dnw", freeze_epoch=0)
    init = build_model("convnet", 10, SHAPE, seed=0)
    top_k = Mask.from_layer_scores({k: w.abs() for k, w in weights(init).items()}, topo.mask.layer_density())
    assert all(torch.equal(topo.mask[k], top_k[k]) for k in top_k)
    run(model, opt, topo, range(10))
    static_model = build_model("convnet", 10, SHAPE, seed=0)
    static_opt = torch.optim.SGD(static_model.parameters(), **SGD)
    static = make_topology("static", static_model, top_k, static_opt, Schedule(EPOCH, 4, torch.Generator()))
    run(static_model, static_opt, static, range(10))
    assert all(torch.equal(v, static_model.state_dict()[k]) for k, v in model.state_dict().items())


def test_dnw_starts_from_every_weight_of_the_init():
    model, opt, topo = setup("dnw")
    init = build_model("convnet", 10, SHAPE, seed=0)
    assert all(torch.equal(w, weights(init)[k]) for k, w in weights(model).items())


def test_dnw_structure_freezes_after_k_epochs():
    model, opt, topo = setup("dnw", freeze_epoch=2)
    first = topo.mask
    run(model, opt, topo, range(EPOCH))
    assert not topo.frozen
    run(model, opt, topo, range(EPOCH, 2 * EPOCH))
    frozen = topo.mask
    assert topo.frozen and any(not torch.equal(first[k], frozen[k]) for k in first)  # it moved before

    def watch(phase, step):
        assert all(torch.equal(topo.mask[k], m) for k, m in frozen.items())
        assert_pruned_zero(model, opt, frozen)

    run(model, opt, topo, range(2 * EPOCH, 4 * EPOCH), watch)


# ---------------------------------------------------------------- both

@pytest.mark.parametrize("name, options", [
    ("rigl", {"delta_t": 3}),
    ("dnw", {}),
    ("dnw", {"freeze_epoch": 1}),
    ("dnw", {"freeze_epoch": 3}),
])
def test_state_dict_round_trip_continues_identically(name, options):
    model, opt, topo = setup(name, **options)
    run(model, opt, topo, range(4 * EPOCH))
    reference = model.state_dict()

    model, opt, topo = setup(name, **options)
    run(model, opt, topo, range(2 * EPOCH))
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "topo": topo.state_dict()}, buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=False)
    model, opt, topo = setup(name, **options)
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["opt"])
    topo.load_state_dict(state["topo"])
    run(model, opt, topo, range(2 * EPOCH, 4 * EPOCH))
    assert all(torch.equal(reference[k], v) for k, v in model.state_dict().items())


# ---------------------------------------------------------------- the first-layer-dense layer policy

@pytest.mark.parametrize("name, options", [
    ("rigl", {"delta_t": 3, "end_fraction": 1.0}),
    ("dnw", {}),
    ("dnw", {"freeze_epoch": 2}),
])
def test_a_dense_first_layer_stays_dense_and_counts_are_kept(name, options):
    """DNW and RigL start from the study's `random` mask: with its first conv dense they keep it dense (no
    drop or grow there), while the other layers still move at constant per-layer counts."""
    model, opt, topo = setup(name, density=0.1, mask_options={"first_layer_dense": True}, **options)
    first = next(iter(prunable(model)))
    start = counts(topo.mask)
    assert start[first] == topo.mask[first].numel() and sum(start.values()) == keep_count(0.1, topo.mask.total)
    masks = []

    def watch(phase, step):
        if phase in ("forward", "end"):
            assert counts(topo.mask) == start and bool(topo.mask[first].all()), (phase, step)
            masks.append(topo.mask)
        if phase == "forward":  # the weights in force: the whole first layer, the top-k elsewhere
            assert bool(prunable(model)[first].ne(0).all())

    run(model, opt, topo, range(4 * EPOCH), watch)
    moved = {k for k in start if any(not torch.equal(m[k], masks[0][k]) for m in masks)}
    assert first not in moved and moved, moved


@pytest.mark.parametrize("name, options, bad", [
    ("rigl", {"delta_t": 0}, "delta_t"),
    ("rigl", {"end_fraction": 1.5}, "end_fraction"),
    ("rigl", {"alpha": 0.0}, "alpha"),
    ("dnw", {"freeze_epoch": -1}, "freeze_epoch"),
])
def test_bad_options_are_named(name, options, bad):
    with pytest.raises(ValueError, match=bad):
        setup(name, **options)
