"""``--pin-cores``: which cores each rank gets, and the clear errors when it cannot be honoured."""

from __future__ import annotations

import os

import pytest

from layerpar.bench.config import BenchConfig
from layerpar.bench.cores import check_cores, rank_cores, usable_cores
from layerpar.errors import ConfigError


def test_each_rank_of_a_one_thread_arm_gets_its_own_core() -> None:
    cores = usable_cores()
    assert cores == sorted(os.sched_getaffinity(0))
    assert [rank_cores(rank, 1) for rank in range(len(cores))] == [{core} for core in cores]


def test_a_k_thread_process_gets_the_first_k_cores() -> None:
    cores = usable_cores()
    assert rank_cores(0, len(cores)) == set(cores)


def test_more_devices_than_cores_is_a_clear_error() -> None:
    check_cores(len(usable_cores()))  # as many devices as cores: fine
    with pytest.raises(ConfigError, match=r"lower --stages to at most \d+, or drop --pin-cores"):
        check_cores(len(usable_cores()) + 1)


@pytest.mark.parametrize("other", [{"predict": True}, {"one_device": True}])
def test_pinning_is_refused_with_a_one_process_profile(other: dict[str, bool]) -> None:
    with pytest.raises(ConfigError, match="run the pinned bench and the prediction as two commands"):
        BenchConfig(pin_cores=True, **other)


def test_the_recorded_command_says_the_arms_were_pinned() -> None:
    assert "--pin-cores" in BenchConfig(pin_cores=True).command_line()
    assert "--pin-cores" not in BenchConfig().command_line()
