"""Training objectives: x_t statistics, exact identities, determinism, label dropout."""

from __future__ import annotations

import pytest
import torch

from layerpar.diffusion import (
    DDPMObjective,
    FlowObjective,
    NoiseSchedule,
    draw_labels,
    objective_for,
)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_ddpm_draw_is_the_forward_process_exactly():
    objective = DDPMObjective(NoiseSchedule("linear", 1000))
    x0 = torch.randn(512, 3, 4, 4, generator=_gen(1), dtype=torch.float64)
    noised = objective.draw(x0, _gen(2))
    assert noised.x_t.shape == x0.shape and noised.x_t.dtype == torch.float64
    assert noised.time.shape == (512,) and noised.time.dtype == torch.float32
    steps = noised.time.long()
    assert torch.equal(steps.float(), noised.time)  # integer step indices as floats
    assert int(steps.min()) >= 0 and int(steps.max()) <= 999
    alpha_bar = objective.schedule.alphas_bar[steps][:, None, None, None]
    expected = alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * noised.noise
    torch.testing.assert_close(noised.x_t, expected)
    assert noised.target is noised.noise


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_ddpm_x_t_variance_per_time_bin(kind):
    objective = DDPMObjective(NoiseSchedule(kind, 1000))
    variance = 4.0
    x0 = torch.randn(40000, 2, generator=_gen(3)) * variance**0.5
    noised = objective.draw(x0, _gen(4))
    steps = noised.time.long()
    alpha_bar = objective.schedule.alphas_bar[steps].float()
    for low in range(0, 1000, 250):
        chosen = (steps >= low) & (steps < low + 250)
        expected = (alpha_bar[chosen] * variance + 1 - alpha_bar[chosen]).mean()
        measured = noised.x_t[chosen].pow(2).mean()  # mean 0, so E[x²] is the variance
        assert measured.item() == pytest.approx(expected.item(), rel=0.05)


def test_ddpm_times_are_uniform_over_all_steps():
    objective = DDPMObjective(NoiseSchedule("linear", 1000))
    time = objective.draw(torch.zeros(20000, 1), _gen(5)).time
    assert time.min().item() == 0 and time.max().item() == 999
    assert time.mean().item() == pytest.approx(499.5, abs=10)
    noise = objective.draw(torch.zeros(20000, 1), _gen(5)).noise
    assert noise.mean().item() == pytest.approx(0, abs=0.03)
    assert noise.std().item() == pytest.approx(1, abs=0.03)


def test_flow_draw_interpolates_and_targets_velocity():
    objective = FlowObjective()
    x0 = torch.randn(20000, 2, generator=_gen(6)) + 3.0
    noised = objective.draw(x0, _gen(7))
    t = (noised.time.double() / 1000.0).float()[:, None]
    torch.testing.assert_close(noised.x_t, (1 - t) * x0 + t * noised.noise, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(noised.target, noised.noise - x0)
    assert noised.time.dtype == torch.float32
    assert noised.time.min().item() >= 0.0 and noised.time.max().item() < 1000.0
    assert noised.time.mean().item() == pytest.approx(500, abs=10)


@pytest.mark.parametrize("objective", [DDPMObjective(NoiseSchedule()), FlowObjective()])
def test_same_seed_gives_identical_draws(objective):
    x0 = torch.randn(64, 5, generator=_gen(8))
    first, second = objective.draw(x0, _gen(9)), objective.draw(x0, _gen(9))
    assert torch.equal(first.x_t, second.x_t) and torch.equal(first.time, second.time)
    assert torch.equal(first.noise, second.noise)
    other = objective.draw(x0, _gen(10))
    assert not torch.equal(first.noise, other.noise)


def test_noise_does_not_depend_on_the_dtype():
    objective = DDPMObjective(NoiseSchedule())
    x0 = torch.randn(16, 3, generator=_gen(11))
    single, double = objective.draw(x0, _gen(12)), objective.draw(x0.double(), _gen(12))
    assert double.x_t.dtype == torch.float64
    assert torch.equal(single.noise.double(), double.noise)
    assert torch.equal(single.time, double.time)


def test_objective_for_names_and_predictions():
    ddpm = objective_for("ddpm", "cosine", 200)
    assert isinstance(ddpm, DDPMObjective)
    assert ddpm.schedule == NoiseSchedule("cosine", 200)
    assert (ddpm.name, ddpm.prediction) == ("ddpm", "eps")
    flow = objective_for("flow")
    assert isinstance(flow, FlowObjective)
    assert (flow.name, flow.prediction) == ("flow", "velocity")


def test_objective_for_rejects_unknown_names():
    with pytest.raises(ValueError, match="unknown diffusion objective 'edm': expected one of ddpm, flow"):
        objective_for("edm")
    with pytest.raises(ValueError, match="unknown noise schedule"):
        objective_for("ddpm", schedule="sqrt")


def test_label_dropout_rate_and_null_label():
    labels = torch.randint(0, 10, (100000,), generator=_gen(13))
    dropped = draw_labels(labels, 10, 0.1, _gen(14))
    is_null = dropped == 10
    assert is_null.float().mean().item() == pytest.approx(0.1, abs=0.005)
    assert torch.equal(dropped[~is_null], labels[~is_null])
    assert torch.equal(draw_labels(labels, 10, 0.1, _gen(14)), dropped)


def test_label_dropout_extremes_and_generator_use():
    labels = torch.arange(10)
    assert torch.equal(draw_labels(labels, 10, 0.0, _gen(15)), labels)
    assert torch.equal(draw_labels(labels, 10, 1.0, _gen(15)), torch.full((10,), 10))
    # the generator advances by the same amount whatever the rate
    zero, half = _gen(16), _gen(16)
    draw_labels(labels, 10, 0.0, zero)
    draw_labels(labels, 10, 0.5, half)
    assert torch.equal(torch.rand(3, generator=zero), torch.rand(3, generator=half))


@pytest.mark.parametrize("dropout", [-0.1, 1.5])
def test_label_dropout_rejects_bad_rates(dropout):
    with pytest.raises(ValueError, match=r"label dropout must lie in \[0, 1\]"):
        draw_labels(torch.zeros(3, dtype=torch.long), 10, dropout, _gen())
