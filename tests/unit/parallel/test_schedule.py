"""Serial warm-up, layer-parallel middle, serial hybrid end; β along the parallel steps."""

from __future__ import annotations

import pytest

from layerpar.config import load_config
from layerpar.parallel.schedule import StepSchedule


def test_phases_and_beta_endpoints():
    s = StepSchedule(total_steps=10, warmup_steps=2, final_serial_steps=3, beta=0.01, beta_final=1.0)
    assert s.parallel_steps == 5
    assert [s.is_serial(i) for i in range(10)] == [True, True] + [False] * 5 + [True] * 3
    assert s.beta_at(2) == pytest.approx(0.01, rel=1e-12)  # first parallel step
    assert s.beta_at(6) == pytest.approx(1.0, rel=1e-12)  # last parallel step
    assert s.beta_at(4) == pytest.approx(0.1, rel=1e-12)  # geometric midpoint
    assert s.beta_at(0) == pytest.approx(0.01, rel=1e-12)  # warm-up: clamped
    assert s.beta_at(9) == pytest.approx(1.0, rel=1e-12)  # hybrid end: clamped


def test_constant_beta():
    s = StepSchedule(total_steps=4, warmup_steps=0, final_serial_steps=0, beta=0.3, beta_final=None)
    assert [s.beta_at(i) for i in range(4)] == [0.3] * 4


def test_from_config_rounds_epochs_to_steps():
    c = load_config(None, ["train.epochs=2", "layerpar.method=al", "layerpar.warmup_epochs=0.5", "layerpar.serial_final_epochs=0.25",
                           "parallel.stages=2"])
    s = StepSchedule.from_config(c, steps_per_epoch=8)
    assert (s.total_steps, s.warmup_steps, s.final_serial_steps, s.parallel_steps) == (16, 4, 2, 10)


@pytest.mark.parametrize("overrides", [["train.mode=serial"], ["parallel.stages=1"]])
def test_serial_runs_are_all_serial(overrides):
    c = load_config(None, ["train.epochs=1", *overrides])
    s = StepSchedule.from_config(c, steps_per_epoch=5)
    assert s.total_steps == 5 and s.parallel_steps == 0
    assert all(s.is_serial(i) for i in range(5))


def test_warmup_longer_than_training_is_capped():
    c = load_config(None, ["train.epochs=1", "layerpar.method=al", "layerpar.warmup_epochs=3", "layerpar.serial_final_epochs=1"])
    s = StepSchedule.from_config(c, steps_per_epoch=5)
    assert (s.warmup_steps, s.final_serial_steps, s.parallel_steps) == (5, 0, 0)


def test_periodic_serial_steps_inside_the_parallel_phase():
    s = StepSchedule(total_steps=12, warmup_steps=2, final_serial_steps=2, beta=0.01, beta_final=None, serial_every=3)
    assert [s.is_serial(i) for i in range(12)] == [True, True, False, False, True, False, False, True,
                                                   False, False, True, True]
    c = load_config(None, ["train.epochs=1", "layerpar.method=al", "layerpar.serial_every=4", "parallel.stages=2"])
    assert StepSchedule.from_config(c, steps_per_epoch=8).serial_every == 4


@pytest.mark.parametrize("value", [1, -2])
def test_serial_every_one_or_negative_is_a_clear_error(value):
    from layerpar.errors import ConfigError

    with pytest.raises(ConfigError, match="serial_every"):
        load_config(None, [f"layerpar.serial_every={value}"])
