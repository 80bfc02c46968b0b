"""Penalty / augmented-Lagrangian local losses and AL updates against hand-computed values.

The tiny problem: B = 2 samples, 3 features, β = 0.5.
"""

from __future__ import annotations

import math

import pytest
import torch

from layerpar.parallel.local_loss import al_targets, beta_at, constraint_residual, local_loss


def t(rows):
    return torch.tensor(rows, dtype=torch.float64)


H = t([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
A = t([[0.0, 2.0, 1.0], [4.0, 4.0, 6.0]])  # h − a = [[1, 0, 2], [0, 1, 0]], ||h − a||² = 6
M = t([[1.0, 0.0, -1.0], [0.5, 0.5, 0.0]])  # <m, h> = 1 − 3 + 2 + 2.5 = 2.5
V = t([[0.0, 1.0, -1.0], [0.5, -0.5, 2.0]])  # m − v = [[1, −1, 0], [0, 1, −2]]
BETA = 0.5


def test_local_loss_value_al():
    # (1/B) [ <m, h> + (β/2) ||h − a||² ] = (2.5 + 0.25·6) / 2 = 2.0
    assert float(local_loss(H, A, M, BETA)) == pytest.approx(2.0, abs=1e-15)


def test_local_loss_value_penalty():
    # multiplier None: (0.25 · 6) / 2 = 0.75
    assert float(local_loss(H, A, None, BETA)) == pytest.approx(0.75, abs=1e-15)


def test_local_loss_value_zero_multiplier_equals_penalty():
    assert float(local_loss(H, A, torch.zeros_like(H), BETA)) == float(local_loss(H, A, None, BETA))


def test_local_loss_gradient_is_m_plus_beta_residual_over_batch():
    h = H.clone().requires_grad_(True)
    local_loss(h, A, M, BETA).backward()
    # (m + β(h − a)) / B = ([[1, 0, −1], [.5, .5, 0]] + .5·[[1, 0, 2], [0, 1, 0]]) / 2
    expected = t([[0.75, 0.0, 0.0], [0.25, 0.5, 0.0]])
    torch.testing.assert_close(h.grad, expected, rtol=0, atol=1e-15)
    torch.testing.assert_close(h.grad, (M + BETA * (H - A)) / 2, rtol=0, atol=1e-15)


def test_local_loss_penalty_gradient():
    h = H.clone().requires_grad_(True)
    local_loss(h, A, None, BETA).backward()
    torch.testing.assert_close(h.grad, BETA * (H - A) / 2, rtol=0, atol=1e-15)


def test_local_loss_is_a_mean_over_samples():
    """Duplicating the batch leaves the value unchanged (sum over features, mean over samples)."""
    double = local_loss(torch.cat([H, H]), torch.cat([A, A]), torch.cat([M, M]), BETA)
    assert float(double) == pytest.approx(float(local_loss(H, A, M, BETA)), abs=1e-15)


def test_local_loss_image_shaped_boundary():
    h = torch.ones(2, 3, 2, 2, dtype=torch.float64)
    a = torch.zeros_like(h)
    # each sample: (β/2)·12 = 3 ; mean over 2 samples = 3
    assert float(local_loss(h, a, None, BETA)) == pytest.approx(3.0)


def test_al_targets_hand_computed():
    lam, mu = al_targets(H, M, V, BETA)
    # λ⁺ = h + (m − v)/β = h + [[2, −2, 0], [0, 2, −4]]
    torch.testing.assert_close(lam, t([[3.0, 0.0, 3.0], [4.0, 7.0, 2.0]]), rtol=0, atol=1e-15)
    torch.testing.assert_close(mu, V, rtol=0, atol=0)


def test_al_targets_penalty_uses_zero_multiplier():
    lam, mu = al_targets(H, None, V, BETA)
    # h − v/β
    torch.testing.assert_close(lam, t([[1.0, 0.0, 5.0], [3.0, 6.0, 2.0]]), rtol=0, atol=1e-15)
    torch.testing.assert_close(mu, V, rtol=0, atol=0)


def test_al_targets_step_clip():
    lam, mu = al_targets(H, M, V, BETA, step_clip=1.5)
    # step [[2, −2, 0], [0, 2, −4]] clipped to ±1.5
    torch.testing.assert_close(lam, t([[2.5, 0.5, 3.0], [4.0, 6.5, 4.5]]), rtol=0, atol=1e-15)
    torch.testing.assert_close(mu, V, rtol=0, atol=0)


def test_al_targets_large_clip_changes_nothing():
    torch.testing.assert_close(al_targets(H, M, V, BETA, step_clip=100.0)[0], al_targets(H, M, V, BETA)[0])


def test_al_multiplier_update_is_mu_plus_beta_times_residual():
    """μ⁺ = μ + β(h − λ⁺), the classic multiplier update, evaluated at the new state."""
    lam, mu = al_targets(H, M, V, BETA)
    torch.testing.assert_close(mu, M + BETA * (H - lam), rtol=0, atol=1e-14)


def test_al_state_update_minimises_the_linearised_lagrangian():
    """λ⁺ is where the gradient in λ of <m, h − λ> + (β/2)||h − λ||² + <v, λ> vanishes."""
    lam, _ = al_targets(H, M, V, BETA)
    lam = lam.clone().requires_grad_(True)
    objective = (M * (H - lam)).sum() + BETA / 2 * (H - lam).pow(2).sum() + (V * lam).sum()
    (grad,) = torch.autograd.grad(objective, lam)
    torch.testing.assert_close(grad, torch.zeros_like(grad), rtol=0, atol=1e-14)


def test_al_targets_fixed_point_when_adjoint_equals_multiplier():
    lam, mu = al_targets(H, M, M.clone(), BETA)
    torch.testing.assert_close(lam, H, rtol=0, atol=0)
    torch.testing.assert_close(mu, M, rtol=0, atol=0)


def test_constraint_residual_hand_computed():
    h = t([[3.0, 4.0]])
    assert float(constraint_residual(h, t([[3.0, 0.0]]))) == pytest.approx(0.8)  # ||(0, 4)|| / ||(3, 4)||
    assert float(constraint_residual(h, h)) == 0.0


def test_constraint_residual_of_zero_activation_is_absolute():
    assert float(constraint_residual(torch.zeros(1, 2), torch.tensor([[3.0, 4.0]]))) == pytest.approx(5.0)


def test_beta_at_constant_without_final():
    for progress in (-1.0, 0.0, 0.3, 1.0, 2.0):
        assert beta_at(0.01, None, progress) == 0.01


def test_beta_at_geometric_endpoints_and_midpoint():
    assert beta_at(0.01, 1.0, 0.0) == pytest.approx(0.01, rel=1e-12)
    assert beta_at(0.01, 1.0, 1.0) == pytest.approx(1.0, rel=1e-12)
    assert beta_at(0.01, 1.0, 0.5) == pytest.approx(math.sqrt(0.01 * 1.0), rel=1e-12)


def test_beta_at_clamps_progress():
    assert beta_at(0.01, 1.0, -3.0) == pytest.approx(0.01, rel=1e-12)
    assert beta_at(0.01, 1.0, 7.0) == pytest.approx(1.0, rel=1e-12)


def test_beta_at_is_monotone():
    values = [beta_at(0.1, 10.0, p / 10) for p in range(11)]
    assert values == sorted(values)
    decreasing = [beta_at(1.0, 0.01, p / 10) for p in range(11)]
    assert decreasing == sorted(decreasing, reverse=True)
