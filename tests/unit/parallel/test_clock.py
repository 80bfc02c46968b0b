"""The worker's phase clock: counts only while on, only named parts, from ``start``."""

from __future__ import annotations

import time

import pytest

from layerpar.parallel.clock import PhaseClock


def test_clock_counts_only_between_start_and_stop() -> None:
    clock = PhaseClock()
    with clock("forward"):
        time.sleep(0.01)
    assert clock.stop() == {}  # off by default: training never pays for it
    clock.start()
    with clock("forward"):
        time.sleep(0.01)
    with clock("forward"):
        time.sleep(0.01)
    counted = clock.stop()
    assert set(counted) == {"forward"} and 0.02 <= counted["forward"] < 1.0
    with clock("backward"):
        time.sleep(0.01)
    assert clock.stop() == counted
    clock.start()
    assert clock.stop() == {}  # start forgets the last count


def test_clock_refuses_a_part_it_does_not_report() -> None:
    clock = PhaseClock()
    clock.start()
    with pytest.raises(ValueError, match="unknown clock part 'fwd'"), clock("fwd"):
        pass


def test_clock_counts_a_part_that_raises() -> None:
    clock = PhaseClock()
    clock.start()
    with pytest.raises(RuntimeError), clock("optimizer"):
        time.sleep(0.005)
        raise RuntimeError("step failed")
    assert clock.stop()["optimizer"] >= 0.005
