"""Where a torch.distributed.pipelining arm's step goes (bench/pipeline_clock.py): real
PipelineStages and schedules in a world of one process (gloo), their compute timed per kind."""

from __future__ import annotations

import math

import pytest
import torch
import torch.distributed as dist
from torch import nn

from layerpar.bench.breakdown import OTHER, STEP
from layerpar.bench.pipeline_clock import (
    PIPELINE_PARTS,
    clock_stages,
    clocked_p2p_waits,
    new_pipeline_clock,
    time_with_breakdown,
)


@pytest.fixture
def world_of_one():
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def _features_loss(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    del target
    return out.pow(2).mean()


def _run(schedule_name: str, stage_count: int) -> dict[str, float]:
    from torch.distributed import pipelining

    torch.manual_seed(0)
    modules = [nn.Sequential(nn.Linear(16, 16), nn.Tanh()) for _ in range(stage_count)]
    stages = [pipelining.PipelineStage(m, i, stage_count, torch.device("cpu")) for i, m in enumerate(modules)]
    cls = getattr(pipelining, schedule_name)
    pipe = cls(stages if stage_count > 1 else stages[0], n_microbatches=4, loss_fn=_features_loss)
    clock = new_pipeline_clock()
    clock_stages(clock, stages)
    x, target = torch.randn(8, 16), torch.zeros(8)

    def step(i: int) -> None:
        with clock("batch"):
            inputs = x + i
        pipe.step(inputs, target=target)
        with clock("optimizer"):
            for m in modules:
                m.zero_grad(set_to_none=True)

    times, sent, breakdown, stash = time_with_breakdown(step, clock, 1, 2)
    assert len(times) == 2 and sent == 0 and stash is None
    assert list(breakdown) == [*PIPELINE_PARTS, OTHER, STEP]
    assert math.isclose(sum(v for k, v in breakdown.items() if k != STEP), breakdown[STEP], rel_tol=1e-9)
    assert math.isclose(breakdown[STEP], 1000 * sum(times) / 2, rel_tol=1e-9)
    return breakdown


def test_a_zero_bubble_schedule_times_both_halves_of_its_split_backward(world_of_one):
    parts = _run("ScheduleInterleavedZeroBubble", 2)
    assert parts["forward"] > 0 and parts["backward: input"] > 0 and parts["backward: weight"] > 0
    assert parts["batch"] > 0 and parts["optimizer"] > 0


def test_a_full_backward_schedule_times_no_split(world_of_one):
    parts = _run("Schedule1F1B", 1)
    assert parts["forward"] > 0 and parts["backward"] > 0
    assert parts["backward: input"] == 0 and parts["backward: weight"] == 0


def test_the_p2p_wait_is_torchs_own_function_again_after_the_block():
    from torch.distributed.pipelining import schedules

    original = schedules._wait_batch_p2p
    clock = new_pipeline_clock()
    clock.start()
    with clocked_p2p_waits(clock):
        assert schedules._wait_batch_p2p is not original
        schedules._wait_batch_p2p([])  # nothing to wait for: still timed
    assert schedules._wait_batch_p2p is original
    assert set(clock.stop()) == {"wait: p2p"}
