"""augment_batch: reproducible from (seed, step), shape-preserving, a true shift/mirror."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from layerpar.data.augment import augment_batch
from layerpar.errors import ConfigError


def batch(n: int = 16, c: int = 2, h: int = 8, w: int = 6) -> torch.Tensor:
    return torch.randn(n, c, h, w, generator=torch.Generator().manual_seed(0))


def shifted(image: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Reference: move ``image`` (C, H, W) by (dy, dx), filling with zeros, the slow way."""
    out = torch.zeros_like(image)
    _, h, w = image.shape
    for y in range(h):
        for x in range(w):
            if 0 <= y - dy < h and 0 <= x - dx < w:
                out[:, y, x] = image[:, y - dy, x - dx]
    return out


def test_same_seed_and_step_give_identical_output() -> None:
    images = batch()
    first = augment_batch(images, seed=3, step=5, flip=True)
    torch.manual_seed(999)  # the global RNG must not matter
    torch.rand(10)
    assert torch.equal(first, augment_batch(images, seed=3, step=5, flip=True))


def test_other_steps_and_seeds_give_other_output() -> None:
    images = batch()
    base = augment_batch(images, seed=3, step=5)
    assert not torch.equal(base, augment_batch(images, seed=3, step=6))
    assert not torch.equal(base, augment_batch(images, seed=4, step=5))


def test_shape_dtype_preserved_and_input_untouched() -> None:
    images = batch().to(torch.float64)
    copy = images.clone()
    out = augment_batch(images, seed=0, step=0, pad=3, flip=True)
    assert out.shape == images.shape and out.dtype == images.dtype
    assert torch.equal(images, copy)


def test_pad_zero_without_flip_is_identity() -> None:
    images = batch()
    out = augment_batch(images, seed=1, step=1, pad=0)
    assert torch.equal(out, images)
    assert out.data_ptr() != images.data_ptr()


def test_every_sample_is_a_shift_within_pad() -> None:
    images = batch(n=32)
    out = augment_batch(images, seed=2, step=0, pad=2)
    seen = set()
    for image, result in zip(images, out, strict=True):
        matches = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
                   if torch.equal(result, shifted(image, dy, dx))]
        assert matches, "output is not a zero-filled shift of its input"
        seen.add(matches[0])
    assert len(seen) > 5  # offsets really vary per sample


def test_flip_mirrors_about_half_the_samples() -> None:
    images = batch(n=64)
    out = augment_batch(images, seed=5, step=0, pad=0, flip=True)
    mirrored = [torch.equal(o, i.flip(-1)) for i, o in zip(images, out, strict=True)]
    same = [torch.equal(o, i) for i, o in zip(images, out, strict=True)]
    assert all(m or s for m, s in zip(mirrored, same, strict=True))
    assert 10 < sum(mirrored) < 54


def test_fill_value_is_used_for_padding() -> None:
    images = torch.ones(50, 1, 4, 4)
    out = augment_batch(images, seed=0, step=0, pad=1, fill=-3.0)
    assert set(out.flatten().tolist()) == {-3.0, 1.0}


def test_invalid_arguments_are_rejected() -> None:
    with pytest.raises(ConfigError, match="N, C, H, W"):
        augment_batch(torch.zeros(3, 8, 8), seed=0, step=0)
    with pytest.raises(ConfigError, match="pad"):
        augment_batch(batch(), seed=0, step=0, pad=-1)


_CHILD = """
import torch
from layerpar.data import augment_batch, epoch_batches
images = torch.arange(4 * 1 * 5 * 5, dtype=torch.float32).reshape(4, 1, 5, 5)
out = augment_batch(images, seed=11, step=3, pad=2, flip=True)
print(out.flatten().tolist(), torch.cat(epoch_batches(50, 7, seed=11, epoch=3)).tolist())
"""


def test_identical_in_another_process() -> None:
    images = torch.arange(4 * 1 * 5 * 5, dtype=torch.float32).reshape(4, 1, 5, 5)
    from layerpar.data import epoch_batches

    expected = (f"{augment_batch(images, seed=11, step=3, pad=2, flip=True).flatten().tolist()} "
                f"{torch.cat(epoch_batches(50, 7, seed=11, epoch=3)).tolist()}")
    repo_root = Path(__file__).resolve().parents[3]  # so the child imports this checkout
    child = subprocess.run([sys.executable, "-c", _CHILD], capture_output=True, text=True,
                           timeout=120, check=True, cwd=repo_root)
    assert child.stdout.strip() == expected
