"""Which rank holds which module: rank = replica × stages + stage."""

from __future__ import annotations

import pytest

from layerpar.errors import ConfigError
from layerpar.parallel.layout import Layout


def test_rank_stage_replica_round_trip():
    layout = Layout(stages=3, replicas=2)
    assert layout.world_size == 6
    for rank in range(6):
        assert layout.rank(layout.stage_of(rank), layout.replica_of(rank)) == rank
    assert [layout.rank(s, 0) for s in range(3)] == [0, 1, 2]
    assert [layout.rank(s, 1) for s in range(3)] == [3, 4, 5]


def test_groups_world_first_then_stage_groups():
    layout = Layout(stages=3, replicas=2)
    assert layout.stage_group(1) == (1, 4)
    assert layout.world() == (0, 1, 2, 3, 4, 5)
    assert layout.groups() == [(0, 1, 2, 3, 4, 5), (0, 3), (1, 4), (2, 5)]


def test_single_replica_groups_are_singletons():
    layout = Layout(stages=2)
    assert layout.groups() == [(0, 1), (0,), (1,)]


def test_check_world_size_accepts_the_product():
    Layout(stages=2, replicas=2).check_world_size(4)


def test_check_world_size_message_prints_factorisations():
    with pytest.raises(ConfigError) as info:
        Layout(stages=2, replicas=2).check_world_size(6)
    message = str(info.value)
    assert "stages=2 × replicas=2 = 4, but world size = 6" in message
    assert "1×6, 2×3, 3×2, 6×1" in message
    assert "parallel.stages" in message and "parallel.replicas" in message


def test_check_world_size_prime():
    with pytest.raises(ConfigError, match=r"e\.g\. 1×7, 7×1$"):
        Layout(stages=2).check_world_size(7)
