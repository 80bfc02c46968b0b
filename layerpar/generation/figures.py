"""Pictures of samples: an image grid, or a scatter of 2-D points against held-out data.

Both are written atomically (a half-written PNG never appears under the final name).
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from layerpar.data.atomic import atomic_output  # noqa: E402


def _save(fig: plt.Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as handle:
        fig.savefig(handle, format="png", dpi=120)
    plt.close(fig)
    return path


def tile(images: torch.Tensor, columns: int) -> torch.Tensor:
    """(n, C, H, W) images in [−1, 1] -> one (rows·H, columns·W, C) array in [0, 1], row-major,
    with a 1-pixel gap; empty cells are black."""
    n, channels, height, width = images.shape
    rows = math.ceil(n / columns)
    canvas = torch.zeros(rows * (height + 1), columns * (width + 1), channels)
    pixels = ((images.float().clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1)
    for i in range(n):
        r, c = divmod(i, columns)
        canvas[r * (height + 1) : r * (height + 1) + height, c * (width + 1) : c * (width + 1) + width] = (
            pixels[i]
        )
    return canvas


def grid_columns(n: int, classes: int | None) -> int:
    """One column per class when there are classes (sample i has class i mod C), else square."""
    if classes and n >= classes:
        return classes
    return max(1, math.ceil(math.sqrt(n)))


def write_grid(images: torch.Tensor, path: str | Path, *, title: str, classes: int | None) -> Path:
    """A grid PNG of ``images``; with classes, column c holds class c."""
    columns = grid_columns(len(images), classes)
    canvas = tile(images, columns)
    rows = canvas.shape[0] / canvas.shape[1] * columns
    fig, ax = plt.subplots(figsize=(max(3.0, columns * 0.6), max(3.0, rows * 0.6) + 0.4))
    if canvas.shape[2] == 1:
        ax.imshow(canvas[:, :, 0].numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    else:
        ax.imshow(canvas.numpy(), interpolation="nearest")
    ax.set_axis_off()
    subtitle = "column c = class c" if classes and len(images) >= classes else f"{len(images)} samples"
    ax.set_title(f"{title}\n{subtitle}", fontsize=9)
    fig.tight_layout()
    return _save(fig, Path(path))


def write_scatter(points: torch.Tensor, reference: torch.Tensor, path: str | Path, *, title: str) -> Path:
    """Samples (left) beside held-out data (right), on the same axes."""
    both = torch.cat([points, reference]).float()
    low, high = both.quantile(0.001, dim=0), both.quantile(0.999, dim=0)
    fig, axes = plt.subplots(1, 2, figsize=(8, 4), sharex=True, sharey=True)
    for ax, data, name in (
        (axes[0], points, f"samples ({len(points)})"),
        (axes[1], reference, f"held-out data ({len(reference)})"),
    ):
        ax.scatter(data[:, 0].numpy(), data[:, 1].numpy(), s=1, alpha=0.4)
        ax.set_title(name, fontsize=9)
        ax.set_xlim(float(low[0]) - 0.2, float(high[0]) + 0.2)
        ax.set_ylim(float(low[1]) - 0.2, float(high[1]) + 0.2)
        ax.set_aspect("equal")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, Path(path))
