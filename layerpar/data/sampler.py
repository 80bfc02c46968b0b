"""Mini-batch index lists for one epoch, identical in every process for a given seed and epoch.

Every worker of a layer-parallel job calls :func:`epoch_batches` itself and gets the same
batches, so no process has to broadcast the order.
"""

from __future__ import annotations

import torch

from layerpar.data.seeding import generator_for
from layerpar.errors import ConfigError


def steps_per_epoch(num_samples: int, batch_size: int, drop_last: bool = True) -> int:
    """Return the number of batches :func:`epoch_batches` returns for these sizes."""
    _check_sizes(num_samples, batch_size)
    full, rest = divmod(num_samples, batch_size)
    return full if drop_last or rest == 0 else full + 1


def epoch_batches(
    num_samples: int, batch_size: int, seed: int, epoch: int, drop_last: bool = True
) -> list[torch.Tensor]:
    """Split a random permutation of ``range(num_samples)`` into int64 index batches.

    The permutation depends only on ``(seed, epoch)``. With ``drop_last`` a final batch smaller
    than ``batch_size`` is left out, so every step has the same shape (and, with fewer
    samples than one batch, there are no batches at all).
    """
    _check_sizes(num_samples, batch_size)
    order = torch.randperm(num_samples, generator=generator_for("sampler", seed, epoch))
    count = steps_per_epoch(num_samples, batch_size, drop_last)
    # clone(): a view would drag the whole permutation along when a batch is pickled.
    return [order[i * batch_size : (i + 1) * batch_size].clone() for i in range(count)]


def _check_sizes(num_samples: int, batch_size: int) -> None:
    if num_samples < 0:
        raise ConfigError(f"num_samples must be >= 0, got {num_samples}.")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}.")
