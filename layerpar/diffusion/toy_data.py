"""2-D toy distributions (FFJORD's checkerboard and 8 Gaussians), generated from seeds.

Nothing is downloaded: each set is a few lines of torch driven by an explicit generator, and
:func:`toy_split` derives separate seeds for train and test so held-out metrics are measured
on points the model never saw.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable

import torch
from torch import Tensor

ToyDistribution = Callable[[int, torch.Generator], Tensor]

# FFJORD's checkerboard has both marginals uniform on [−4, 4] (std 8/√12 = 4/√3); dividing by
# that fixed constant gives unit variance per coordinate without looking at the data.
_CHECKERBOARD_STD = 4.0 / math.sqrt(3.0)
_GAUSSIANS_RADIUS = 4.0  # before FFJORD's final division by 1.414
_GAUSSIANS_STD = 0.5
_GAUSSIANS_SCALE = 1.414


def checkerboard(n: int, generator: torch.Generator) -> Tensor:
    """FFJORD's 4×4 checkerboard on [−4, 4]² (8 filled squares), divided by 4/√3 for unit variance."""
    x1 = torch.rand(n, generator=generator, dtype=torch.float64) * 4.0 - 2.0
    x2 = torch.rand(n, generator=generator, dtype=torch.float64)
    x2 = x2 - 2.0 * torch.randint(0, 2, (n,), generator=generator).to(torch.float64)
    x2 = x2 + torch.floor(x1).remainder(2.0)
    points = torch.stack([x1, x2], dim=1) * 2.0
    return (points / _CHECKERBOARD_STD).to(torch.float32)


def eight_gaussians(n: int, generator: torch.Generator) -> Tensor:
    """FFJORD's 8 Gaussians: centres on a circle of radius 4, std 0.5, all divided by 1.414.

    After scaling the centres lie at radius ≈ 2√2 and each component has std ≈ 0.354; the data
    have a per-coordinate std of about 2 (FFJORD's scale, kept so results compare with theirs).
    """
    angles = torch.arange(8, dtype=torch.float64) * (math.pi / 4.0)
    centres = _GAUSSIANS_RADIUS * torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)
    points = torch.randn(n, 2, generator=generator, dtype=torch.float64) * _GAUSSIANS_STD
    which = torch.randint(0, 8, (n,), generator=generator)
    return ((points + centres[which]) / _GAUSSIANS_SCALE).to(torch.float32)


TOY_DISTRIBUTIONS: dict[str, ToyDistribution] = {
    "checkerboard": checkerboard,
    "gaussians8": eight_gaussians,
}
_SPLITS: tuple[str, ...] = ("train", "test")


def split_seed(name: str, split: str, seed: int) -> int:
    """A 63-bit seed for (distribution, split, seed), the same in every process and platform.

    Hashing a labelled string keeps the train and test streams (and different distributions)
    unrelated, which seeding with seed and seed + 1 would not guarantee.
    """
    digest = hashlib.blake2b(f"toy:{name}:{split}:{int(seed)}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def toy_split(name: str, split: str, n: int, seed: int) -> Tensor:
    """``n`` points of the named distribution for ``split`` ("train" or "test", checked at run time),
    train and test from independent seeds."""
    if name not in TOY_DISTRIBUTIONS:
        raise ValueError(f"unknown toy distribution {name!r}: expected one of {', '.join(TOY_DISTRIBUTIONS)}")
    if split not in _SPLITS:
        raise ValueError(f"unknown split {split!r}: expected 'train' or 'test'")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    generator = torch.Generator().manual_seed(split_seed(name, split, seed))
    return TOY_DISTRIBUTIONS[name](n, generator)
