"""Every worker draws the identical batch (and augmentation) of a step from the shared seed."""

from __future__ import annotations

import pytest
import torch

from layerpar.data import ArrayDataset
from layerpar.errors import ConfigError
from layerpar.parallel.batches import BatchPlan


def _dataset(n: int = 100) -> ArrayDataset:
    g = torch.Generator().manual_seed(0)
    return ArrayDataset(images=torch.randn(n, 1, 8, 8, generator=g),
                        labels=torch.randint(0, 10, (n,), generator=g), num_classes=10)


def test_same_seed_same_batches_in_any_order():
    data = _dataset()
    a = BatchPlan(data, 32, seed=3, crop_pad=2)
    b = BatchPlan(data, 32, seed=3, crop_pad=2)
    order = [4, 0, 4, 2, 1]
    first = {s: a.batch(s) for s in range(5)}
    for step in order:  # b visits steps out of order and across epochs
        x, y = b.batch(step)
        assert torch.equal(x, first[step][0]) and torch.equal(y, first[step][1])


def test_epochs_are_permutations_without_repeats():
    plan = BatchPlan(_dataset(), 32, seed=0)
    assert plan.steps_per_epoch == 3
    epoch0 = torch.cat([plan.indices(s) for s in range(3)])
    epoch1 = torch.cat([plan.indices(s) for s in range(3, 6)])
    assert len(set(epoch0.tolist())) == 96 and len(set(epoch1.tolist())) == 96
    assert not torch.equal(epoch0, epoch1)


@pytest.mark.parametrize("replicas", [2, 4])
def test_replica_shards_tile_the_global_batch(replicas):
    plan = BatchPlan(_dataset(), 32, seed=1, crop_pad=2)
    x, y = plan.batch(2)
    shards = [plan.batch(2, r, replicas) for r in range(replicas)]
    assert all(s[0].shape[0] == 32 // replicas for s in shards)
    assert torch.equal(torch.cat([s[0] for s in shards]), x)
    assert torch.equal(torch.cat([s[1] for s in shards]), y)


def test_augmentation_depends_on_the_step():
    data = _dataset()
    plan = BatchPlan(data, 32, seed=1, crop_pad=2)
    plain = BatchPlan(data, 32, seed=1, crop_pad=0)
    x, _ = plan.batch(0)
    raw, _ = plain.batch(0)
    assert not torch.equal(x, raw)
    assert torch.equal(raw, data.images[plan.indices(0)])


def test_batch_larger_than_data_says_what_to_change():
    with pytest.raises(ConfigError, match="train.batch_size.*data.train_limit"):
        BatchPlan(_dataset(10), 32, seed=0)
