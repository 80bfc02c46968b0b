"""Metrics against closed forms and brute force: sliced Wasserstein, MMD², Fréchet, floor."""

from __future__ import annotations

import math

import pytest
import torch

from layerpar.diffusion import floor, frechet_distance, median_bandwidth, mmd_rbf, sliced_wasserstein
from layerpar.diffusion import metrics as metrics_module


def _normal(n: int, dims: int, seed: int) -> torch.Tensor:
    return torch.randn(n, dims, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_sliced_wasserstein_is_zero_on_the_same_sample_and_deterministic():
    a = _normal(500, 3, 0)
    assert sliced_wasserstein(a, a) == 0.0
    b = _normal(500, 3, 1)
    assert sliced_wasserstein(a, b, seed=7) == sliced_wasserstein(a, b, seed=7)
    assert sliced_wasserstein(a, b, seed=7) != sliced_wasserstein(a, b, seed=8)


def test_sliced_wasserstein_grows_with_a_mean_shift_as_the_closed_form():
    a, b = _normal(5000, 2, 2), _normal(5000, 2, 3)
    shifts = [0.5, 1.0, 2.0]
    values = [sliced_wasserstein(a, b + torch.tensor([shift, 0.0], dtype=torch.float64)) for shift in shifts]
    assert values == sorted(values)
    for shift, value in zip(shifts, values):
        # W₂²(θ·a, θ·b) = (θ·μ)², and E_θ[(θ·μ)²] = |μ|²/D for uniform unit θ
        assert value == pytest.approx(shift / math.sqrt(2), abs=0.05)


def test_sliced_wasserstein_of_a_scale_change():
    a, b = _normal(5000, 2, 4), _normal(5000, 2, 5) * 2.0
    assert sliced_wasserstein(a, b) == pytest.approx(1.0, abs=0.05)  # every projection: W₂ = |σa − σb|


def test_sliced_wasserstein_handles_unequal_sizes_exactly():
    a = _normal(300, 2, 6)
    assert sliced_wasserstein(a, torch.cat([a, a])) == pytest.approx(0.0, abs=1e-12)  # same empirical law
    # hand-computed 1-D case: quantiles of {0, 1} vs {0, 0.5, 1} differ by 0.5 on a third of (0, 1)
    small = torch.tensor([[0.0], [1.0]])
    large = torch.tensor([[0.0], [0.5], [1.0]])
    assert sliced_wasserstein(small, large, projections=4) == pytest.approx(math.sqrt(1 / 12))


def test_sliced_wasserstein_equal_sizes_is_the_sorted_formula():
    a, b = _normal(200, 1, 7), _normal(200, 1, 8) + 0.3
    expected = (a.sort(0).values - b.sort(0).values).pow(2).mean().sqrt().item()
    assert sliced_wasserstein(a, b, projections=3) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("size_b", [100, 150])  # the equal-size path and the quantile-pairing path
def test_sliced_wasserstein_projection_chunks_do_not_change_the_value(monkeypatch, size_b):
    a, b = _normal(100, 4, 9), _normal(size_b, 4, 10)
    whole = sliced_wasserstein(a, b, projections=64)
    monkeypatch.setattr(metrics_module, "_BLOCK_ELEMENTS", 1000)  # ≈ 2 projections per chunk
    assert sliced_wasserstein(a, b, projections=64) == pytest.approx(whole, rel=1e-12)


def test_metrics_reject_bad_shapes():
    with pytest.raises(ValueError, match="must be a 2-D"):
        sliced_wasserstein(torch.zeros(10), torch.zeros(10))
    with pytest.raises(ValueError, match="different dimensions: 2 and 3"):
        mmd_rbf(torch.zeros(10, 2), torch.zeros(10, 3))
    with pytest.raises(ValueError, match="at least 2 points"):
        mmd_rbf(torch.zeros(1, 2), torch.zeros(10, 2))
    with pytest.raises(ValueError, match="positive numbers"):
        mmd_rbf(torch.zeros(5, 2), torch.ones(5, 2), bandwidths=[1.0, 0.0])


def _brute_force_mmd(a: torch.Tensor, b: torch.Tensor, bandwidths: list[float]) -> float:
    def kernel(x, y):
        d2 = torch.cdist(x, y).pow(2)
        return sum(torch.exp(-d2 / (2 * h * h)) for h in bandwidths)

    n, m = len(a), len(b)
    kxx, kyy = kernel(a, a), kernel(b, b)
    within_a = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
    within_b = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return float(within_a + within_b - 2 * kernel(a, b).mean())


def test_mmd_matches_brute_force_with_and_without_chunking(monkeypatch):
    a, b = _normal(50, 3, 11), _normal(70, 3, 12) + 0.4
    bandwidths = [0.5, 1.0, 2.0]
    expected = _brute_force_mmd(a, b, bandwidths)
    assert mmd_rbf(a, b, bandwidths=bandwidths) == pytest.approx(expected, rel=1e-9)
    monkeypatch.setattr(metrics_module, "_BLOCK_ELEMENTS", 200)  # blocks of 2-4 rows
    assert mmd_rbf(a, b, bandwidths=bandwidths) == pytest.approx(expected, rel=1e-9)


def test_mmd_is_near_zero_for_one_distribution_and_large_for_a_shift():
    a, b = _normal(1500, 2, 13), _normal(1500, 2, 14)
    same = mmd_rbf(a, b)
    shifted = mmd_rbf(a, b + 1.0)
    assert abs(same) < 0.003
    assert shifted > 0.1
    assert mmd_rbf(a, b + 0.5) < shifted


def test_median_bandwidth_is_the_median_pairwise_distance():
    a, b = _normal(40, 2, 15), _normal(30, 2, 16)
    pooled = torch.cat([a, b])
    assert median_bandwidth(a, b) == pytest.approx(torch.pdist(pooled).median().item(), rel=1e-9)
    big = _normal(3000, 2, 17)
    assert median_bandwidth(big, big) == median_bandwidth(big, big)  # seeded subsample of 2000
    assert median_bandwidth(torch.zeros(3, 2), torch.zeros(3, 2)) == 1.0


def test_frechet_distance_matches_the_gaussian_closed_form():
    mean_a, mean_b = torch.tensor([0.0, 1.0, -1.0]), torch.tensor([0.5, 1.0, 1.0])
    std_a, std_b = torch.tensor([1.0, 2.0, 0.5]), torch.tensor([1.5, 2.0, 1.0])
    a = mean_a + std_a * _normal(20000, 3, 18)
    b = mean_b + std_b * _normal(20000, 3, 19)
    # diagonal covariances: ||μa − μb||² + Σ_i (σa_i − σb_i)²; with the sample moments the only
    # error left is from the (small) off-diagonal sample covariances, which enter to second order
    from_samples = float((a.mean(0) - b.mean(0)).pow(2).sum() + (a.std(0) - b.std(0)).pow(2).sum())
    assert frechet_distance(a, b) == pytest.approx(from_samples, abs=0.005)
    population = float((mean_a - mean_b).pow(2).sum() + (std_a - std_b).pow(2).sum())
    assert frechet_distance(a, b) == pytest.approx(population, abs=0.15)  # 4.75; sampling error ≈ 0.04
    assert frechet_distance(a, b) == pytest.approx(frechet_distance(b, a), rel=1e-6)


def test_frechet_distance_of_identical_and_singular_features():
    a = _normal(500, 4, 20)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)
    few_a, few_b = _normal(5, 10, 21), _normal(5, 10, 22)  # rank-4 covariances in 10-D
    value = frechet_distance(few_a, few_b)
    assert math.isfinite(value) and value > 0
    one_d = frechet_distance(_normal(1000, 1, 23), _normal(1000, 1, 24) + 2)
    assert one_d == pytest.approx(4.0, abs=0.3)


def test_floor_is_small_positive_and_seeded():
    reference = _normal(4000, 2, 25)
    value = floor(sliced_wasserstein, reference)
    assert 0 < value < 0.1
    assert floor(sliced_wasserstein, reference) == value
    assert floor(sliced_wasserstein, reference, seed=1) != value
    assert value < sliced_wasserstein(reference[:2000], reference[2000:] + 0.5)
    assert abs(floor(mmd_rbf, reference[:1000])) < 0.01
    with pytest.raises(ValueError, match="at least 4 reference points"):
        floor(sliced_wasserstein, reference[:3])
