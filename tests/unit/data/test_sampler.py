"""Epoch batch order: deterministic in (seed, epoch), a permutation, correct sizes."""

from __future__ import annotations

import pytest
import torch

from layerpar.data.sampler import epoch_batches, steps_per_epoch
from layerpar.errors import ConfigError


def test_same_seed_and_epoch_give_the_same_batches() -> None:
    first = epoch_batches(103, 10, seed=7, epoch=2)
    torch.manual_seed(12345)  # the global RNG must not matter
    second = epoch_batches(103, 10, seed=7, epoch=2)
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))


def test_other_epochs_and_seeds_give_other_orders() -> None:
    base = torch.cat(epoch_batches(100, 10, seed=7, epoch=0))
    assert not torch.equal(base, torch.cat(epoch_batches(100, 10, seed=7, epoch=1)))
    assert not torch.equal(base, torch.cat(epoch_batches(100, 10, seed=8, epoch=0)))


def test_batches_form_a_permutation_without_drop_last() -> None:
    batches = epoch_batches(103, 10, seed=1, epoch=0, drop_last=False)
    assert [len(b) for b in batches] == [10] * 10 + [3]
    assert all(b.dtype == torch.int64 for b in batches)
    assert torch.equal(torch.cat(batches).sort().values, torch.arange(103))


def test_drop_last_keeps_only_full_batches() -> None:
    batches = epoch_batches(103, 10, seed=1, epoch=0)
    assert [len(b) for b in batches] == [10] * 10
    assert len(set(torch.cat(batches).tolist())) == 100
    assert epoch_batches(5, 10, seed=1, epoch=0) == []


@pytest.mark.parametrize(
    ("n", "bs", "drop_last", "steps"),
    [(100, 10, True, 10), (103, 10, True, 10), (103, 10, False, 11), (0, 4, False, 0),
     (3, 4, True, 0), (3, 4, False, 1)],
)
def test_steps_per_epoch_matches_the_batches(n: int, bs: int, drop_last: bool, steps: int) -> None:
    assert steps_per_epoch(n, bs, drop_last) == steps
    assert len(epoch_batches(n, bs, seed=0, epoch=0, drop_last=drop_last)) == steps


def test_invalid_sizes_are_rejected() -> None:
    with pytest.raises(ConfigError, match="batch_size"):
        epoch_batches(10, 0, seed=0, epoch=0)
    with pytest.raises(ConfigError, match="num_samples"):
        steps_per_epoch(-1, 4)
