"""Sample-quality metrics for generative models: sliced Wasserstein, MMD² and Fréchet distance.

Every metric is deterministic (fixed seeds for its own random choices, float64 arithmetic) so
that two training arms evaluated on the same samples get the same number, and all of them are
biased in the sample size: compare numbers only at equal sizes, next to :func:`floor`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import scipy.linalg  # type: ignore[import-untyped]  # no scipy-stubs in the dev environment
import torch
from torch import Tensor

Metric = Callable[[Tensor, Tensor], float]

# Largest number of float64 entries one kernel block may hold (2²³ · 8 B = 64 MiB); the distance
# block and one exp temporary are alive at once, so a block peaks near 130 MB.
_BLOCK_ELEMENTS = 2**23
_MEDIAN_POINTS = 2000  # the median heuristic on at most this many pooled points
_MEDIAN_SEED = 0
_BANDWIDTH_FACTORS = (0.5, 1.0, 2.0)
_FRECHET_EPS = 1e-6  # the ridge the usual FID code adds when Σa·Σb is singular


def _as_points(x: Tensor, name: str) -> Tensor:
    """A (N, D) float64 CPU copy of ``x``, with a clear error for any other shape."""
    if x.dim() != 2:
        raise ValueError(f"{name} must be a 2-D (points, dims) tensor, got shape {tuple(x.shape)}")
    return x.detach().to(device="cpu", dtype=torch.float64)


def _check_dims(a: Tensor, b: Tensor) -> None:
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"the two samples have different dimensions: {a.shape[1]} and {b.shape[1]}")


def _random_directions(dims: int, count: int, seed: int) -> Tensor:
    """``count`` unit vectors uniform on the sphere in R^dims, as the rows of a (count, dims) matrix."""
    generator = torch.Generator().manual_seed(seed)
    directions = torch.randn(count, dims, generator=generator, dtype=torch.float64)
    return directions / directions.norm(dim=1, keepdim=True)


def _quantile_pairing(n: int, m: int) -> tuple[Tensor, Tensor, Tensor]:
    """(widths, index_a, index_b) such that W₂² = Σ_k widths_k·(a_(index_a_k) − b_(index_b_k))².

    W₂² = ∫₀¹ (F_a⁻¹(u) − F_b⁻¹(u))² du, and both empirical quantile functions are piecewise
    constant, changing only at u = i/N or u = j/M; on each piece between merged breakpoints they
    are the sorted values at fixed ranks. Summing over the pieces is therefore exact for any
    N, M (and reduces to mean((a_(i) − b_(i))²) when N = M).
    """
    levels = torch.cat(
        [torch.arange(1, n + 1, dtype=torch.float64) / n, torch.arange(1, m + 1, dtype=torch.float64) / m]
    )
    levels = torch.unique(levels)  # sorted; merging duplicates only drops zero-width pieces
    widths = torch.diff(levels, prepend=levels.new_zeros(1))
    middle = levels - widths / 2
    index_a = (middle * n).floor().long().clamp(max=n - 1)
    index_b = (middle * m).floor().long().clamp(max=m - 1)
    return widths, index_a, index_b


def sliced_wasserstein(a: Tensor, b: Tensor, *, projections: int = 512, seed: int = 0) -> float:
    """Sliced 2-Wasserstein distance: sqrt(mean over random directions θ of W₂²(θ·a, θ·b)).

    This is what POT's ``sliced_wasserstein_distance(..., p=2)`` computes. The directions are
    uniform unit vectors from a generator seeded with ``seed``. Sizes may differ: each 1-D W₂²
    is computed exactly from the two empirical quantile functions (no resampling, no
    interpolation error); equal sizes take the plain sorted-difference path.
    """
    points_a, points_b = _as_points(a, "a"), _as_points(b, "b")
    _check_dims(points_a, points_b)
    if projections < 1:
        raise ValueError(f"projections must be >= 1, got {projections}")
    n, m = points_a.shape[0], points_b.shape[0]
    directions = _random_directions(points_a.shape[1], projections, seed)
    pairing = None if n == m else _quantile_pairing(n, m)
    chunk = max(1, _BLOCK_ELEMENTS // (2 * (n + m)))
    total = 0.0
    for start in range(0, projections, chunk):
        block = directions[start : start + chunk]
        # (projections, points): sorting along the contiguous last dimension is ~2× faster
        a_sorted = (block @ points_a.T).sort(dim=1).values
        b_sorted = (block @ points_b.T).sort(dim=1).values
        if pairing is None:
            total += float((a_sorted - b_sorted).pow_(2).sum()) / n
        else:
            widths, index_a, index_b = pairing
            total += float(((a_sorted[:, index_a] - b_sorted[:, index_b]).pow_(2) * widths).sum())
    return float(np.sqrt(total / projections))


def _squared_distances(x: Tensor, y: Tensor) -> Tensor:
    """Pairwise ||x_i − y_j||² via the Gram expansion, clamped at 0 against rounding."""
    squared = (x @ y.T).mul_(-2.0)  # in place: one (len(x), len(y)) buffer, no temporaries
    squared.add_((x * x).sum(dim=1)[:, None]).add_((y * y).sum(dim=1)[None, :])
    return squared.clamp_(min=0.0)


def median_bandwidth(
    a: Tensor, b: Tensor, *, max_points: int = _MEDIAN_POINTS, seed: int = _MEDIAN_SEED
) -> float:
    """Median pairwise distance of the pooled sample (on at most ``max_points`` seeded points).

    Falls back to 1.0 when every point coincides, so the kernel stays defined.
    """
    pooled = torch.cat([_as_points(a, "a"), _as_points(b, "b")])
    if pooled.shape[0] > max_points:
        generator = torch.Generator().manual_seed(seed)
        pooled = pooled[torch.randperm(pooled.shape[0], generator=generator)[:max_points]]
    rows, cols = torch.triu_indices(pooled.shape[0], pooled.shape[0], offset=1)
    distances = _squared_distances(pooled, pooled)[rows, cols].sqrt()
    median = float(distances.median()) if distances.numel() else 0.0
    return median if median > 0.0 else 1.0


def _block_rows(columns: int) -> int:
    """Rows per kernel block so that one block holds at most ``_BLOCK_ELEMENTS`` entries."""
    return max(1, _BLOCK_ELEMENTS // max(1, columns))


def _rbf_sum(x: Tensor, y: Tensor, gammas: Sequence[float]) -> float:
    """Σ_ij Σ_h exp(−γ_h·||x_i − y_j||²) over one block pair."""
    squared = _squared_distances(x, y)
    return sum(float(torch.exp(-gamma * squared).sum()) for gamma in gammas)


def _kernel_sum(x: Tensor, y: Tensor, gammas: Sequence[float]) -> float:
    """Σ_ij k(x_i, y_j) over all pairs, in row blocks of at most ``_BLOCK_ELEMENTS`` entries."""
    rows = _block_rows(y.shape[0])
    return sum(_rbf_sum(x[start : start + rows], y, gammas) for start in range(0, x.shape[0], rows))


def _symmetric_kernel_sum(x: Tensor, gammas: Sequence[float]) -> float:
    """Σ_ij k(x_i, x_j) over all pairs (diagonal included), computing each off-diagonal block once.

    k is symmetric, so a row block only meets the points from its own start onwards and the part
    beyond the block is counted twice: about half the work of :func:`_kernel_sum` on (x, x).
    """
    rows = _block_rows(x.shape[0])
    total = 0.0
    for start in range(0, x.shape[0], rows):
        stop = start + rows
        block = x[start:stop]
        total += _rbf_sum(block, block, gammas)
        if stop < x.shape[0]:
            total += 2.0 * _rbf_sum(block, x[stop:], gammas)
    return total


def mmd_rbf(a: Tensor, b: Tensor, *, bandwidths: Sequence[float] | None = None) -> float:
    """Unbiased MMD² with k(x, y) = Σ_h exp(−||x − y||² / (2h²)) over the bandwidths h.

    Default bandwidths: the median pairwise distance of the pooled sample times (0.5, 1, 2).
    Unbiased means the i = j terms are left out of the within-sample means, so the estimate
    is ≈ 0 (and can be slightly negative) for two samples of the same distribution.
    Kernel blocks are computed a few thousand rows at a time: 10k × 10k stays near 200 MB.
    """
    x, y = _as_points(a, "a"), _as_points(b, "b")
    _check_dims(x, y)
    n, m = x.shape[0], y.shape[0]
    if n < 2 or m < 2:
        raise ValueError(f"unbiased MMD needs at least 2 points per sample, got {n} and {m}")
    if bandwidths is None:
        median = median_bandwidth(x, y)
        bandwidths = [median * factor for factor in _BANDWIDTH_FACTORS]
    if not bandwidths or any(h <= 0 for h in bandwidths):
        raise ValueError(f"bandwidths must be a non-empty list of positive numbers, got {bandwidths}")
    gammas = [1.0 / (2.0 * h * h) for h in bandwidths]
    diagonal = len(gammas)  # k(x, x) = 1 per bandwidth
    within_x = (_symmetric_kernel_sum(x, gammas) - n * diagonal) / (n * (n - 1))
    within_y = (_symmetric_kernel_sum(y, gammas) - m * diagonal) / (m * (m - 1))
    between = _kernel_sum(x, y, gammas) / (n * m)
    return within_x + within_y - 2.0 * between


def _mean_and_covariance(features: Tensor, name: str) -> tuple[np.ndarray, np.ndarray]:
    array = _as_points(features, name).numpy()
    if array.shape[0] < 2:
        raise ValueError(f"{name} needs at least 2 feature vectors for a covariance, got {array.shape[0]}")
    return array.mean(axis=0), np.atleast_2d(np.cov(array, rowvar=False))


def _sqrtm_product(sigma_a: np.ndarray, sigma_b: np.ndarray) -> np.ndarray:
    """(Σa·Σb)^{1/2}, retried with ε·I added to both when the product is singular (as FID code does)."""
    root = scipy.linalg.sqrtm(sigma_a @ sigma_b)
    if not np.isfinite(root).all():
        ridge = _FRECHET_EPS * np.eye(sigma_a.shape[0])
        root = scipy.linalg.sqrtm((sigma_a + ridge) @ (sigma_b + ridge))
    return np.real(root)


def frechet_distance(features_a: Tensor, features_b: Tensor) -> float:
    """Fréchet distance of Gaussians fitted to two feature sets (the FID formula, float64).

    ||μa − μb||² + Tr(Σa + Σb − 2(Σa·Σb)^{1/2}); the imaginary part that sqrtm produces from
    rounding is discarded. Biased in the sample count: compare only at equal sizes.
    """
    mu_a, sigma_a = _mean_and_covariance(features_a, "features_a")
    mu_b, sigma_b = _mean_and_covariance(features_b, "features_b")
    if mu_a.shape != mu_b.shape:
        raise ValueError(f"feature dimensions differ: {mu_a.shape[0]} and {mu_b.shape[0]}")
    root = _sqrtm_product(sigma_a, sigma_b)
    difference = mu_a - mu_b
    return float(difference @ difference + np.trace(sigma_a) + np.trace(sigma_b) - 2.0 * np.trace(root))


def floor(metric: Metric, reference: Tensor, *, seed: int = 0) -> float:
    """The data-vs-data floor: ``metric`` between two random halves of ``reference`` (seeded).

    It is what the metric reads between two samples of the same distribution of this size
    (each half has len(reference) // 2 points; an odd last point is dropped), i.e. the best
    a model can score when compared on samples of that size. For a floor matching n generated
    vs n held-out points, pass 2n reference points.
    """
    if reference.shape[0] < 4:
        raise ValueError(f"floor needs at least 4 reference points, got {reference.shape[0]}")
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(reference.shape[0], generator=generator).to(reference.device)
    half = reference.shape[0] // 2
    return metric(reference[order[:half]], reference[order[half : 2 * half]])
