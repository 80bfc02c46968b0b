"""Batch augmentation (random shifts, optional mirror) reproducible from a seed and a step.

In layer-parallel training every worker holds a different part of the network but must see
the *same* augmented batch. Rather than sending augmented images between processes, each one
recomputes them: all randomness comes from a generator seeded by ``(seed, step)`` alone, so
the result is bit-identical everywhere, whatever else the process has drawn before.
"""

from __future__ import annotations

import torch
from torch.nn import functional

from layerpar.data.seeding import generator_for
from layerpar.errors import ConfigError


def augment_batch(
    images: torch.Tensor, seed: int, step: int, *, pad: int = 2, flip: bool = False, fill: float = 0.0
) -> torch.Tensor:
    """Randomly shift (and optionally mirror) each image of an ``(N, C, H, W)`` batch.

    Each sample is padded by ``pad`` pixels of value ``fill`` on every side and cropped back to
    ``H x W`` at a random offset, i.e. shifted by a random amount in ``[-pad, pad]`` along each
    axis. With ``flip``, each sample is also mirrored left-right with probability 1/2. Leave
    ``flip`` off for digits (MNIST, sklearn digits): a mirrored 2, 3 or 7 is no longer that
    digit. It suits Fashion-MNIST, whose garments are roughly symmetric.

    Images are usually normalised, so ``fill=0.0`` pads with the mean intensity; pass
    ``-mean / std`` (see :func:`layerpar.data.datasets.normalization`) to pad with black.

    The same ``(seed, step)`` gives the same result in every process; the input is not
    modified, and ``pad=0`` without ``flip`` returns an exact copy.
    """
    if images.dim() != 4:
        raise ConfigError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}.")
    if pad < 0:
        raise ConfigError(f"pad must be >= 0, got {pad}.")
    n, channels, height, width = images.shape
    offsets, mirrored = _draw(n, seed, step, pad=pad, flip=flip)
    offsets, mirrored = offsets.to(images.device), mirrored.to(images.device)

    rows = offsets[:, :1] + torch.arange(height, device=images.device)  # (N, H)
    forward = torch.arange(width, device=images.device)
    # A left-right mirror after cropping is just reversed column indices, so flipping costs
    # nothing beyond the crop itself.
    cols = offsets[:, 1:] + torch.where(mirrored[:, None], forward.flip(0), forward)  # (N, W)

    padded = functional.pad(images, (pad, pad, pad, pad), value=fill)
    row_index = rows[:, None, :, None].expand(n, channels, height, width + 2 * pad)
    picked_rows = padded.gather(2, row_index)
    return picked_rows.gather(3, cols[:, None, None, :].expand(n, channels, height, width))


def _draw(n: int, seed: int, step: int, *, pad: int, flip: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample crop offsets in ``[0, 2*pad]`` (rows, cols) and mirror flags, on the CPU.

    Drawing on a CPU generator keeps the numbers identical whether the images live on a CPU
    or a GPU. Offsets are drawn first, so turning ``flip`` on does not change the shifts.
    """
    generator = generator_for("augment", seed, step)
    offsets = torch.randint(0, 2 * pad + 1, (n, 2), generator=generator)
    mirrored = torch.rand(n, generator=generator) < 0.5 if flip else torch.zeros(n, dtype=torch.bool)
    return offsets, mirrored
