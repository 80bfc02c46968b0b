"""Sampler settings from the run (and overrides), balanced labels, seeded draws."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from layerpar.errors import ConfigError
from layerpar.generation import balanced_labels, draw_samples, load_denoiser, sampler_settings


def test_settings_follow_the_run_and_its_overrides(toy_run: Path, digits_run: Path) -> None:
    toy, digits = load_denoiser(toy_run), load_denoiser(digits_run)
    assert sampler_settings(toy) == sampler_settings(toy, "ddpm")  # the toy preset samples with DDPM
    assert sampler_settings(toy).steps is None
    assert sampler_settings(toy).guidance == 1.0  # unconditional: never guided
    assert sampler_settings(toy, guidance=3.0).guidance == 1.0
    chosen = sampler_settings(digits)
    assert (chosen.method, chosen.steps, chosen.guidance) == ("ddim", 5, 2.0)
    chosen = sampler_settings(digits, "ddim", 3, 1.5)
    assert (chosen.method, chosen.steps, chosen.guidance) == ("ddim", 3, 1.5)


def test_ddpm_with_a_step_count_is_a_clear_error(toy_run: Path) -> None:
    with pytest.raises(ConfigError, match="takes all 50 steps"):
        sampler_settings(load_denoiser(toy_run), "ddpm", 10)


def test_labels_cycle_through_the_classes(toy_run: Path, digits_run: Path) -> None:
    assert balanced_labels(load_denoiser(digits_run), 23).tolist() == [i % 10 for i in range(23)]
    toy = load_denoiser(toy_run)
    assert balanced_labels(toy, 4).tolist() == [toy.task.null_label] * 4


def test_draws_are_fixed_by_the_seed(digits_run: Path) -> None:
    loaded = load_denoiser(digits_run)
    a, labels = draw_samples(loaded, 12, seed=3, batch_size=5)
    b, _ = draw_samples(loaded, 12, seed=3, batch_size=5)
    c, _ = draw_samples(loaded, 12, seed=4, batch_size=5)
    assert a.shape == (12, 1, 8, 8) and labels.tolist() == [i % 10 for i in range(12)]
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.abs().max() <= 1.0 + 1e-6  # DDIM clips x̂₀ to the image range


def test_toy_draws_are_points(toy_run: Path) -> None:
    points, _ = draw_samples(load_denoiser(toy_run), 7, seed=0)
    assert points.shape == (7, 2) and torch.isfinite(points).all()


def test_zero_samples_is_a_clear_error(toy_run: Path) -> None:
    with pytest.raises(ConfigError, match="at least one sample"):
        draw_samples(load_denoiser(toy_run), 0)
