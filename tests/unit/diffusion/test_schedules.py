"""Noise schedules: DDPM's linear endpoints, the cosine closed form, validation."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from layerpar.diffusion import MODEL_TIME_SCALE, NoiseSchedule


def test_model_time_scale_is_1000():
    assert MODEL_TIME_SCALE == 1000.0


def test_linear_schedule_matches_ddpm_endpoints():
    schedule = NoiseSchedule("linear", 1000)
    assert schedule.betas.dtype == torch.float64
    assert schedule.betas.shape == (1000,)
    assert schedule.betas[0].item() == pytest.approx(1e-4, abs=1e-15)
    assert schedule.betas[-1].item() == pytest.approx(0.02, abs=1e-15)
    # DDPM's ᾱ_T for this schedule is ≈ 4.04e-5 (the signal is almost gone at the end).
    assert schedule.alphas_bar[-1].item() == pytest.approx(4.036e-5, rel=1e-3)


def test_linear_schedule_rescales_for_other_lengths():
    schedule = NoiseSchedule("linear", 50)  # improved-DDPM rule: both ends × 1000/T = 20
    assert schedule.betas[0].item() == pytest.approx(2e-3)
    assert schedule.betas[-1].item() == pytest.approx(0.4)


@pytest.mark.parametrize("kind", ["linear", "cosine"])
@pytest.mark.parametrize("timesteps", [50, 1000])
def test_alphas_bar_decrease_strictly_inside_unit_interval(kind, timesteps):
    schedule = NoiseSchedule(kind, timesteps)
    alphas_bar = schedule.alphas_bar
    assert alphas_bar.shape == (timesteps,)
    assert bool((alphas_bar > 0).all()) and bool((alphas_bar < 1).all())
    assert bool((alphas_bar[1:] < alphas_bar[:-1]).all())
    torch.testing.assert_close(schedule.alphas, 1.0 - schedule.betas)
    torch.testing.assert_close(alphas_bar, torch.cumprod(schedule.alphas, 0))


def test_cosine_schedule_matches_closed_form_and_clip():
    timesteps, s = 1000, 0.008
    schedule = NoiseSchedule("cosine", timesteps)

    def f(t: float) -> float:
        return math.cos((t / timesteps + s) / (1 + s) * math.pi / 2) ** 2

    for step in (0, 100, 500, 900):  # unclipped region: ᾱ_t = f(t + 1) / f(0)
        assert schedule.alphas_bar[step].item() == pytest.approx(f(step + 1) / f(0), rel=1e-9)
    assert schedule.betas.max().item() == pytest.approx(0.999)  # the last β is clipped
    assert schedule.betas[0].item() < 1e-4


@pytest.mark.parametrize(
    ("kind", "timesteps", "message"),
    [
        ("sigmoid", 1000, "expected one of linear, cosine"),
        ("linear", 20, "linear schedule needs timesteps >= 21"),
        ("cosine", 0, "cosine schedule needs timesteps >= 1"),
        ("linear", 100.0, "timesteps must be an int"),
        ("linear", True, "timesteps must be an int"),
    ],
)
def test_invalid_schedules_raise(kind, timesteps, message):
    with pytest.raises(ValueError, match=message):
        NoiseSchedule(kind, timesteps)


def test_schedule_is_frozen_and_compares_by_parameters():
    schedule = NoiseSchedule("cosine", 100)
    with pytest.raises(dataclasses.FrozenInstanceError):
        schedule.timesteps = 10  # type: ignore[misc]
    assert schedule == NoiseSchedule("cosine", 100)
    assert schedule != NoiseSchedule("linear", 100)
    assert NoiseSchedule() == NoiseSchedule("linear", 1000)
