"""Our SGD against torch.optim.SGD: the same update, bit for bit."""
from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from sparsenets.models import build_model
from sparsenets.optim import SGD

SETTINGS = [dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4),
            dict(lr=0.05, momentum=0.9, nesterov=False, weight_decay=5e-4),
            dict(lr=0.1, momentum=0.0, nesterov=False, weight_decay=0.0)]


def _trained(opt_class, settings: dict, steps: int = 4) -> tuple[dict, torch.nn.Module]:
    model = build_model("convnet", 10, (3, 32, 32), seed=0)
    opt = opt_class(model.parameters(), **settings)
    gen = torch.Generator().manual_seed(1)
    for i in range(steps):
        x, y = torch.randn(16, 3, 32, 32, generator=gen), torch.randint(10, (16,), generator=gen)
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        if i == 2:
            for group in opt.param_groups:
                group["lr"] = settings["lr"] / 10  # a schedule's milestone
        opt.step()
    return opt, model


@pytest.mark.parametrize("settings", SETTINGS)
def test_update_matches_torch_sgd_bit_for_bit(settings):
    ours, a = _trained(SGD, settings)
    theirs, b = _trained(torch.optim.SGD, settings)
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(p, q), name
        if settings["momentum"]:
            assert torch.equal(ours.state[p]["momentum_buffer"], theirs.state[q]["momentum_buffer"]), name


def test_state_round_trip_continues_identically():
    settings = SETTINGS[0]
    opt, model = _trained(SGD, settings, steps=2)
    saved = ({k: v.clone() for k, v in model.state_dict().items()}, opt.state_dict())
    copy = build_model("convnet", 10, (3, 32, 32), seed=5)
    copy.load_state_dict(saved[0])
    again = SGD(copy.parameters(), **settings)
    again.load_state_dict(saved[1])
    x, y = torch.randn(8, 3, 32, 32), torch.randint(10, (8,))
    for net, o in ((model, opt), (copy, again)):
        o.zero_grad()
        F.cross_entropy(net(x), y).backward()
        o.step()
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), copy.parameters()))


def test_nesterov_without_momentum_is_refused():
    with pytest.raises(ValueError, match="Nesterov"):
        SGD([torch.zeros(2, requires_grad=True)], lr=0.1, nesterov=True)
