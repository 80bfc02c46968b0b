"""The AuxNet: shapes, zero-initialised multiplier heads, prefixes, objective, oracle, cost."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from layerpar.auxnet import (
    AuxNet,
    OracleAux,
    aux_cost_fraction,
    aux_loss,
    boundary_shapes,
    build_auxnet,
    parameter_fraction,
    squared_error,
)
from layerpar.models import residual_mlp, resnet
from layerpar.parallel.partition import split


def _resnet_aux(stages: int, size: int = 8, channels: int = 1, **kwargs):
    model = resnet(20, in_channels=channels, num_classes=10)
    part = split(model, stages, "blocks")
    shapes = boundary_shapes(part.stages, torch.zeros(2, channels, size, size))
    aux = build_auxnet((channels, size, size), shapes, **kwargs)
    return model, part, shapes, aux


@pytest.mark.parametrize("stages", [2, 3, 4])
@pytest.mark.parametrize("size", [8, 28])
def test_resnet_auxnet_predicts_every_boundary_shape(stages, size):
    model, part, shapes, aux = _resnet_aux(stages, size)
    assert isinstance(aux, AuxNet) and aux.num_boundaries == stages - 1 == len(shapes)
    # The probe agrees with a real forward pass through the stages.
    h = torch.randn(3, 1, size, size)
    for stage, shape in zip(part.stages, shapes):
        h = stage(h)
        assert tuple(h.shape[1:]) == shape
    out = aux(torch.randn(3, 1, size, size))
    assert [tuple(s.shape) for s in out.states] == [(3, *s) for s in shapes]
    assert [tuple(m.shape) for m in out.multipliers] == [(3, *s) for s in shapes]


def test_resnet20_boundary_shapes_on_28x28():
    _, part, shapes, _ = _resnet_aux(2, 28)
    assert part.bounds == (0, 5, 11)  # stem + 3 blocks of group 1 + first block of group 2
    assert shapes == [(32, 14, 14)]
    _, _, shapes4, _ = _resnet_aux(4, 28)
    assert shapes4 == [(16, 28, 28), (32, 14, 14), (64, 7, 7)]


def test_boundary_shapes_restores_training_mode():
    model = resnet(20, in_channels=1)
    part = split(model, 3)
    part.stages[1].eval()
    boundary_shapes(part.stages, torch.zeros(2, 1, 8, 8))
    assert [s.training for s in part.stages] == [True, False, True]


@pytest.mark.parametrize("stages", [2, 3, 4])
def test_multiplier_heads_start_at_exactly_zero(stages):
    _, _, _, aux = _resnet_aux(stages)
    out = aux(torch.randn(4, 1, 8, 8))
    for m in out.multipliers:
        assert m is not None and torch.count_nonzero(m) == 0
    assert aux.heads is not None
    for p in aux.heads.parameters():
        assert torch.count_nonzero(p) == 0
    # The state adapters are not zero: the AuxNet predicts something from the start.
    assert all(float(s.detach().abs().sum()) > 0 for s in out.states)


def test_without_multiplier_heads():
    _, _, _, aux = _resnet_aux(3, multiplier_heads=False)
    out = aux(torch.randn(2, 1, 8, 8))
    assert aux.heads is None and out.multipliers == [None, None]


def test_upto_computes_a_prefix():
    _, _, _, aux = _resnet_aux(4)
    x = torch.randn(3, 1, 8, 8)
    full = aux(x)
    for upto in range(3):
        prefix = aux(x, upto=upto)
        assert len(prefix.states) == len(prefix.multipliers) == upto + 1
        for a, b in zip(prefix.states, full.states):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert len(aux(x, upto=99).states) == 3


def test_upto_does_not_touch_later_segments():
    _, _, _, aux = _resnet_aux(3)
    aux(torch.randn(2, 1, 8, 8), upto=0).states[0].sum().backward()
    assert all(p.grad is None for p in aux.segments[1].parameters())
    assert all(p.grad is None for p in aux.adapters[1].parameters())
    assert any(p.grad is not None for p in aux.segments[0].parameters())


def test_mlp_backbone_gets_an_mlp_auxnet():
    model = residual_mlp(64, 10, hidden=16, depth=4)
    part = split(model, 3)
    shapes = boundary_shapes(part.stages, torch.zeros(2, 1, 8, 8))
    assert shapes == [(16,), (16,)]
    aux = build_auxnet((1, 8, 8), shapes, width=8)
    out = aux(torch.randn(5, 1, 8, 8))
    assert [tuple(s.shape) for s in out.states] == [(5, 16), (5, 16)]
    assert all(torch.count_nonzero(m) == 0 for m in out.multipliers)


def test_auxnet_is_small():
    model, _, _, aux = _resnet_aux(2, 28)
    assert 0 < parameter_fraction(aux, model) < 0.25


def test_aux_cost_fraction_is_finite_and_positive_and_leaves_buffers():
    """resnet20, K = 2, 1×28×28. Timing targets are benchmarks, not unit tests: only sanity."""
    model, _, _, aux = _resnet_aux(2, 28)
    before = [{k: v.clone() for k, v in m.state_dict().items()} for m in (aux, model)]
    fraction = aux_cost_fraction(aux, model, torch.randn(4, 1, 28, 28), repeats=1)
    assert math.isfinite(fraction) and fraction > 0
    for module, state in zip((aux, model), before):
        for key, value in module.state_dict().items():
            assert torch.equal(value, state[key]), key


# --------------------------------------------------------------------------------------------
# Objective


def t(rows):
    return torch.tensor(rows, dtype=torch.float64)


def test_squared_error_hand_computed():
    # ((1)² + 0 + 0 + (2)²) / 2 samples
    assert float(squared_error(t([[1, 2], [3, 4]]), t([[0, 2], [3, 2]]))) == pytest.approx(2.5)


def test_aux_loss_hand_computed():
    state, state_target = t([[1, 2], [3, 4]]), t([[0, 2], [3, 2]])  # 5 / 2 = 2.5
    m, m_target = t([[1, 1], [0, 0]]), t([[0, 1], [0, 2]])  # (1 + 4) / 2 = 2.5
    assert float(aux_loss(state, m, state_target, m_target, gamma=0.5)) == pytest.approx(2.5 + 0.5 * 2.5)
    assert float(aux_loss(state, m, state_target, m_target, gamma=2.0)) == pytest.approx(2.5 + 5.0)
    assert float(aux_loss(state, m, state_target, m_target, gamma=0.0)) == pytest.approx(2.5)
    assert float(aux_loss(state, None, state_target, m_target, gamma=1.0)) == pytest.approx(2.5)
    assert float(aux_loss(state, m, state_target, None, gamma=1.0)) == pytest.approx(2.5)


def test_aux_loss_gradient():
    state = t([[1, 2], [3, 4]]).requires_grad_(True)
    m = t([[1, 1], [0, 0]]).requires_grad_(True)
    aux_loss(state, m, t([[0, 2], [3, 2]]), t([[0, 1], [0, 2]]), gamma=0.5).backward()
    torch.testing.assert_close(state.grad, t([[1, 0], [0, 2]]))  # 2(a − λ⁺)/B
    torch.testing.assert_close(m.grad, t([[0.5, 0], [0, -1]]))  # γ·2(m − μ⁺)/B


# --------------------------------------------------------------------------------------------
# Oracle


def test_oracle_gives_true_states_and_per_sample_adjoints():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    part = split(model, 3)
    x = torch.randn(5, 4, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 0, 1])
    out = OracleAux(part.stages, F.cross_entropy)(x, y)
    assert len(out.states) == len(out.multipliers) == 2
    # Serial truth by hand.
    h1 = part.stages[0](x)
    h2 = part.stages[1](h1)
    g1, g2 = torch.autograd.grad(F.cross_entropy(part.stages[2](h2), y), [h1, h2])
    torch.testing.assert_close(out.states[0], h1.detach(), rtol=0, atol=0)
    torch.testing.assert_close(out.states[1], h2.detach(), rtol=0, atol=0)
    torch.testing.assert_close(out.multipliers[0], 5 * g1, rtol=1e-12, atol=0)
    torch.testing.assert_close(out.multipliers[1], 5 * g2, rtol=1e-12, atol=0)
    assert not out.states[0].requires_grad and not out.multipliers[0].requires_grad
    assert all(p.grad is None for p in model.parameters())


def test_oracle_with_one_stage_has_no_boundaries():
    model = nn.Sequential(nn.Linear(4, 3))
    out = OracleAux(split(model, 1).stages, F.cross_entropy)(torch.randn(2, 4), torch.tensor([0, 1]))
    assert out.states == [] and out.multipliers == []


def test_oracle_restores_batchnorm_buffers():
    model = resnet(20, in_channels=1)
    part = split(model, 3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    OracleAux(part.stages, F.cross_entropy)(torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 2, 3]))
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_label_conditioned_multiplier_heads_start_unconditioned_and_learn_from_labels() -> None:
    import torch

    from layerpar.auxnet import build_auxnet

    shapes = [(16, 8, 8), (32, 4, 4)]
    aux = build_auxnet((1, 8, 8), shapes, width=8, label_classes=10)
    x = torch.randn(6, 1, 8, 8)
    y = torch.arange(6) % 10
    for head in aux.heads:  # give the heads a non-zero output so conditioning is visible
        torch.nn.init.normal_(head.proj.weight)
    plain, conditioned = aux(x), aux(x, labels=y)
    for a, b in zip(plain.multipliers, conditioned.multipliers):
        torch.testing.assert_close(a, b)  # zero-initialised FiLM: no effect at start
    torch.nn.init.normal_(aux.label_film[0].weight)
    moved = aux(x, labels=y)
    assert not torch.allclose(moved.multipliers[0], plain.multipliers[0])
    torch.testing.assert_close(moved.states[0], plain.states[0])  # states never see labels


def test_strided_stem_predicts_full_resolution_boundaries_for_less() -> None:
    import torch

    from layerpar.auxnet import build_auxnet

    shapes = [(16, 28, 28), (32, 14, 14), (64, 7, 7)]
    full = build_auxnet((1, 28, 28), shapes, width=8)
    half = build_auxnet((1, 28, 28), shapes, width=8, stem_stride=2)
    x = torch.randn(3, 1, 28, 28)
    for a, b, shape in zip(full(x).states, half(x).states, shapes):
        assert a.shape == b.shape == (3, *shape)
    assert half(x).multipliers[0].abs().max() == 0  # heads still start at zero
