"""Cutting a backbone into K contiguous stages that minimise the slowest stage."""

from __future__ import annotations

import itertools
import random

import pytest
import torch
from torch import nn

from layerpar.errors import PartitionError
from layerpar.models import Backbone, resnet
from layerpar.parallel.partition import Partition, balanced_bounds, block_costs, split


def _max_stage_cost(costs, bounds):
    return max(sum(costs[a:b]) for a, b in zip(bounds, bounds[1:]))


def _brute_force_optimum(costs, stages):
    n = len(costs)
    return min(
        _max_stage_cost(costs, (0, *cuts, n)) for cuts in itertools.combinations(range(1, n), stages - 1)
    )


def _assert_valid(bounds, n, stages):
    bounds = list(bounds)
    assert len(bounds) == stages + 1
    assert bounds[0] == 0 and bounds[-1] == n
    assert all(a < b for a, b in zip(bounds, bounds[1:])), f"empty or unordered stage in {bounds}"


# --------------------------------------------------------------------------------------------
# balanced_bounds


@pytest.mark.parametrize(
    ("n", "stages", "expected"),
    [(6, 3, [0, 2, 4, 6]), (6, 2, [0, 3, 6]), (8, 4, [0, 2, 4, 6, 8]), (5, 1, [0, 5])],
)
def test_equal_costs_give_equal_counts(n, stages, expected):
    assert balanced_bounds([1.0] * n, stages) == expected


@pytest.mark.parametrize(("n", "stages"), [(7, 3), (11, 2), (11, 4), (20, 6)])
def test_equal_costs_uneven_counts_differ_by_at_most_one(n, stages):
    bounds = balanced_bounds([1.0] * n, stages)
    _assert_valid(bounds, n, stages)
    counts = [b - a for a, b in zip(bounds, bounds[1:])]
    assert max(counts) - min(counts) <= 1
    assert max(counts) == -(-n // stages)


def test_one_heavy_block_gets_a_stage_of_its_own():
    assert balanced_bounds([1, 1, 10, 1, 1], 3) == [0, 2, 3, 5]
    assert balanced_bounds([10, 1, 1, 1], 2) == [0, 1, 4]
    assert balanced_bounds([1, 1, 1, 10], 2) == [0, 3, 4]


def test_heavy_block_dominates_so_the_rest_is_free():
    bounds = balanced_bounds([1, 1, 1, 1, 100, 1, 1], 3)
    _assert_valid(bounds, 7, 3)
    assert _max_stage_cost([1, 1, 1, 1, 100, 1, 1], bounds) == 100


@pytest.mark.parametrize("n", [1, 4, 9])
def test_as_many_stages_as_blocks(n):
    assert balanced_bounds([random.random() + 0.1 for _ in range(n)], n) == list(range(n + 1))


def test_dp_matches_brute_force_on_random_costs():
    rng = random.Random(1234)
    for _ in range(150):
        n = rng.randint(1, 8)
        stages = rng.randint(1, n)
        costs = [rng.choice([rng.random(), float(rng.randint(1, 5))]) for _ in range(n)]
        bounds = balanced_bounds(costs, stages)
        _assert_valid(bounds, n, stages)
        assert _max_stage_cost(costs, bounds) == pytest.approx(_brute_force_optimum(costs, stages), rel=1e-12), (
            costs,
            stages,
            bounds,
        )


# --------------------------------------------------------------------------------------------
# split


def _resnet20():
    torch.manual_seed(0)
    return resnet(20, in_channels=1, num_classes=10)


@pytest.mark.parametrize("stages", [12, 50])
def test_split_more_stages_than_blocks_says_how_to_fix(stages):
    model = _resnet20()  # 11 blocks
    with pytest.raises(PartitionError) as info:
        split(model, stages)
    message = str(info.value)
    assert "11 blocks" in message and f"{stages} stages" in message
    assert "1 <= stages <= 11" in message
    assert "deeper model" in message
    assert isinstance(info.value, ValueError)


def test_split_zero_stages_fails():
    with pytest.raises(PartitionError, match="1 <= stages"):
        split(_resnet20(), 0)


def test_split_unknown_balance_names_the_valid_ones():
    with pytest.raises(PartitionError, match="blocks, params, time"):
        split(_resnet20(), 2, balance="flops")  # type: ignore[arg-type]


def test_split_time_without_sample_asks_for_one():
    with pytest.raises(PartitionError, match="sample="):
        split(_resnet20(), 2, balance="time")


@pytest.mark.parametrize("balance", ["blocks", "params", "time"])
@pytest.mark.parametrize("stages", [1, 2, 3, 11])
def test_split_gives_a_valid_contiguous_cover(balance, stages):
    model = _resnet20()
    sample = torch.randn(2, 1, 8, 8)
    part = split(model, stages, balance, sample=sample, repeats=1)
    _assert_valid(part.bounds, len(model), stages)
    assert part.num_stages == stages
    assert [len(s) for s in part.stages] == [b - a for a, b in zip(part.bounds, part.bounds[1:])]
    assert len(part.block_costs) == len(model)
    assert all(c > 0 for c in part.block_costs)
    assert sum(part.stage_costs()) == pytest.approx(sum(part.block_costs))
    # The stages are the model's blocks, in order, not copies.
    blocks = [b for s in part.stages for b in s.blocks]
    assert all(a is b for a, b in zip(blocks, model.blocks)) and len(blocks) == len(model)
    # Composed, the stages are the model.
    model.eval()
    x = torch.randn(3, 1, 8, 8)
    h = x
    for stage in part.stages:
        h = stage(h)
    torch.testing.assert_close(h, model(x), rtol=0, atol=0)


@pytest.mark.parametrize("stages", [2, 3, 4])
def test_split_params_is_optimal_for_its_costs(stages):
    model = _resnet20()
    part = split(model, stages, "params")
    costs = list(part.block_costs)
    assert costs == [float(sum(p.numel() for p in b.parameters())) + 1.0 for b in model.blocks]
    assert max(part.stage_costs()) == pytest.approx(_brute_force_optimum(costs, stages))


def test_profiling_leaves_the_model_as_it_was():
    model = _resnet20()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    costs = block_costs(model, "time", torch.randn(4, 1, 8, 8), repeats=1)
    assert len(costs) == len(model) and all(c > 0 for c in costs)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert all(p.grad is None for p in model.parameters())


def test_split_user_sequential_shares_modules():
    seq = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    part = split(seq, 2, "params")
    assert all(isinstance(s, Backbone) for s in part.stages)
    assert [m for s in part.stages for m in s.blocks] == list(seq)
    assert all(a is b for a, b in zip([m for s in part.stages for m in s.blocks], seq))


def test_split_rejects_other_modules():
    with pytest.raises(PartitionError, match="nn.Sequential"):
        split(nn.Linear(3, 3), 1)


# --------------------------------------------------------------------------------------------
# Partition


def _partition(bounds, costs):
    model = Backbone([nn.Identity() for _ in costs])
    stages = tuple(model.slice(a, b) for a, b in zip(bounds, bounds[1:]))
    return Partition(stages=stages, bounds=tuple(bounds), block_costs=tuple(costs))


def test_imbalance_hand_computed():
    part = _partition((0, 2, 3), (1.0, 1.0, 4.0))
    assert part.stage_costs() == [2.0, 4.0]
    assert part.imbalance() == pytest.approx(4.0 / 3.0)


def test_imbalance_perfect_and_degenerate():
    assert _partition((0, 1, 2), (2.0, 2.0)).imbalance() == 1.0
    assert _partition((0, 1, 2), (0.0, 0.0)).imbalance() == 1.0
    assert _partition((0, 3), (1.0, 5.0, 2.0)).imbalance() == 1.0


def test_balanced_split_is_no_worse_than_equal_counts():
    model = _resnet20()
    by_params = split(model, 3, "params")
    equal = balanced_bounds([1.0] * len(model), 3)
    costs = list(by_params.block_costs)
    assert max(by_params.stage_costs()) <= _max_stage_cost(costs, equal) + 1e-9
    assert by_params.imbalance() >= 1.0
