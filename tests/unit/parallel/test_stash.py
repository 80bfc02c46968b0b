"""Weight stashing's helpers: the stashed forward gives the live forward's output and gradient,
and the staleness diagnostic is ||θ_now − θ_forward|| / ||θ_now||."""

from __future__ import annotations

import torch
from torch import nn

from layerpar.parallel.stash import move_gradients, stashed_forward, weight_staleness


def _module() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3)).double()


def test_stashed_forward_keeps_the_gradient_at_the_weights_it_ran_on() -> None:
    module, u = _module(), torch.randn(4, 5, dtype=torch.float64)
    h, weights = stashed_forward(module, u)
    expected = [g.clone() for g in torch.autograd.grad(module(u).sum(), list(module.parameters()))]
    with torch.no_grad():
        for p in module.parameters():
            p.add_(1.0)  # an optimiser step between the forward and the backward
    h.sum().backward()
    move_gradients(module, weights)
    for p, g in zip(module.parameters(), expected, strict=True):
        assert torch.allclose(p.grad, g, rtol=0, atol=1e-12)


def test_weight_staleness_is_the_relative_distance_moved() -> None:
    module = _module()
    stashed = [p.detach().clone() for p in module.parameters()]
    assert float(weight_staleness(module, stashed)) == 0.0
    with torch.no_grad():
        for p in module.parameters():
            p.mul_(1.5)
    now = torch.cat([p.detach().flatten() for p in module.parameters()])
    then = torch.cat([w.flatten() for w in stashed])
    expected = float((now - then).norm() / now.norm())
    assert abs(float(weight_staleness(module, stashed)) - expected) < 1e-12
    assert abs(expected - 1 / 3) < 1e-12


def test_forwards_on_one_weight_version_share_a_copy_and_each_gets_its_own_gradient() -> None:
    from layerpar.parallel.stash import VersionCopies, forward_on_copies

    module, copies = _module(), VersionCopies()
    u1, u2 = torch.randn(4, 5, dtype=torch.float64), torch.randn(3, 5, dtype=torch.float64)
    first = copies.get(module)
    assert copies.get(module) is first  # no optimiser step between: one copy
    h1, h2 = forward_on_copies(module, first, {}, u1), forward_on_copies(module, first, {}, u2)
    grads = [
        [g.clone() for g in torch.autograd.grad(module(u).sum(), list(module.parameters()))] for u in (u1, u2)
    ]
    h1.sum().backward()
    move_gradients(module, list(first.values()))
    assert all(w.grad is None for w in first.values())  # cleared for the next backward
    h2.sum().backward()
    move_gradients(module, list(first.values()))
    for p, g1, g2 in zip(module.parameters(), *grads, strict=True):
        assert torch.allclose(p.grad, g1 + g2, rtol=0, atol=1e-12)  # each counted once
    with torch.no_grad():
        next(module.parameters()).add_(1.0)  # an in-place write (an optimiser step) ...
    second = copies.get(module)
    assert second is not first  # ... starts a new version's copy
    assert torch.equal(next(iter(second.values())), next(module.parameters()))
    shift = {name: torch.ones_like(p) for name, p in module.named_parameters()}
    assert copies.get(module, shift) is not copies.get(module, shift)  # shifted copies are never shared
