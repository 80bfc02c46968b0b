"""2-D toy distributions: shapes, geometry, determinism, independent train and test."""

from __future__ import annotations

import math

import pytest
import torch

from layerpar.diffusion import TOY_DISTRIBUTIONS, checkerboard, eight_gaussians, toy_split


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_registry_names():
    assert set(TOY_DISTRIBUTIONS) == {"checkerboard", "gaussians8"}
    assert TOY_DISTRIBUTIONS["checkerboard"] is checkerboard
    assert TOY_DISTRIBUTIONS["gaussians8"] is eight_gaussians


@pytest.mark.parametrize("name", ["checkerboard", "gaussians8"])
def test_shape_dtype_and_determinism(name):
    draw = TOY_DISTRIBUTIONS[name]
    points = draw(1000, _gen(1))
    assert points.shape == (1000, 2) and points.dtype == torch.float32
    assert torch.equal(points, draw(1000, _gen(1)))
    assert not torch.equal(points, draw(1000, _gen(2)))


def test_checkerboard_is_standardised_and_on_the_board():
    points = checkerboard(40000, _gen(3))
    torch.testing.assert_close(points.mean(0), torch.zeros(2), atol=0.03, rtol=0)
    torch.testing.assert_close(points.std(0), torch.ones(2), atol=0.03, rtol=0)
    assert points.abs().max().item() <= math.sqrt(3) + 1e-6  # [−4, 4] divided by 4/√3
    cells = torch.floor(points.double() * (4 / math.sqrt(3)) / 2).long()  # back to FFJORD's 4×4 cells
    assert bool(((cells[:, 0] + cells[:, 1]) % 2 == 0).all())  # only the 8 "black" squares
    assert len(set(map(tuple, cells.tolist()))) == 8


def test_eight_gaussians_geometry():
    points = eight_gaussians(40000, _gen(4)).double()
    angles = torch.arange(8, dtype=torch.float64) * math.pi / 4
    centres = (4 / 1.414) * torch.stack([torch.cos(angles), torch.sin(angles)], 1)
    distances = torch.cdist(points, centres)
    nearest = distances.argmin(1)
    assert torch.bincount(nearest, minlength=8).min().item() > 4000  # all 8 modes, about 5000 each
    offsets = points - centres[nearest]
    torch.testing.assert_close(
        offsets.std(0), torch.full((2,), 0.5 / 1.414, dtype=torch.float64), atol=0.01, rtol=0
    )
    assert points.norm(dim=1).mean().item() == pytest.approx(2 * math.sqrt(2), abs=0.05)


@pytest.mark.parametrize("name", ["checkerboard", "gaussians8"])
def test_toy_split_train_and_test_are_different_and_reproducible(name):
    train, test = toy_split(name, "train", 500, seed=0), toy_split(name, "test", 500, seed=0)
    assert train.shape == test.shape == (500, 2)
    assert not torch.equal(train, test)
    assert torch.equal(train, toy_split(name, "train", 500, seed=0))
    assert not torch.equal(train, toy_split(name, "train", 500, seed=1))
    # no shared points: the two splits come from unrelated streams
    assert torch.cdist(train, test).min().item() > 0


def test_toy_split_validation():
    with pytest.raises(ValueError, match="unknown toy distribution 'moons'"):
        toy_split("moons", "train", 10, 0)
    with pytest.raises(ValueError, match="unknown split 'val'"):
        toy_split("checkerboard", "val", 10, 0)
    with pytest.raises(ValueError, match="n must be >= 1"):
        toy_split("checkerboard", "train", 0, 0)
