"""torch's pipeline runtime cost: the profile's lookup, how the cost model spreads it over a
rank's actions, and a real measurement in K gloo processes through torch.distributed.pipelining."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch.distributed as dist

from layerpar.bench.costmodel import Link, predict_pipeline
from layerpar.bench.costmodel_multistage import predict_multistage
from layerpar.bench.profile import Profile, RuntimeOverhead
from layerpar.bench.profile_runtime import SCHEDULES, measure_runtime_overhead, runs
from layerpar.bench.schedule_sim import Action, StageCosts, makespan, schedule_orders, stage_rank
from tests.unit.bench.fakes import hand_profile

IDEAL = Link(latency_s=0.0, bandwidth_Bps=1e30)


def _with_runtime(seconds: float, schedule: str, stages: int = 2, micro: int = 2) -> Profile:
    return dataclasses.replace(hand_profile(), runtime=(RuntimeOverhead(schedule, stages, micro, seconds),))


def test_lookup_uses_the_nearest_measured_k_never_below_zero():
    p = dataclasses.replace(
        hand_profile(),
        runtime=(RuntimeOverhead("gpipe", 2, 4, 0.3), RuntimeOverhead("gpipe", 8, 4, 0.9),
                 RuntimeOverhead("zbv", 2, 4, -0.01)),
    )
    assert p.runtime_overhead("gpipe", 2, 4) == 0.3
    assert p.runtime_overhead("gpipe", 3, 4) == 0.3 and p.runtime_overhead("gpipe", 6, 4) == 0.9
    assert p.runtime_overhead("zbv", 2, 4) == 0.0  # a slightly negative reading is noise
    assert p.runtime_overhead("gpipe", 2, 8) == 0.0 and p.runtime_overhead("1f1b", 2, 4) == 0.0
    assert Profile.from_dict(p.to_dict()) == p


def test_closed_form_pipeline_spreads_it_over_each_stages_actions():
    base = predict_pipeline(hand_profile(), 2, 1, 2, IDEAL)
    slow = predict_pipeline(_with_runtime(0.4, "gpipe"), 2, 1, 2, IDEAL)
    # 0.4 s over a rank's 2M = 4 actions: each stage's f+b per micro-batch grows by 0.2;
    # the critical path crosses (M + K − 1) = 3 of them
    assert slow.step_s - base.step_s == pytest.approx(3 * 0.2)
    other = predict_pipeline(_with_runtime(0.4, "1f1b"), 2, 1, 2, IDEAL)
    assert other.step_s == pytest.approx(base.step_s)  # another schedule's reading is not used


def test_per_action_cost_on_one_rank_adds_once_per_action():
    orders = {0: [Action("F", 0, 0), Action("B", 0, 0), Action("F", 0, 1), Action("B", 0, 1)]}
    costs = StageCosts((1.0,), (2.0,), ())
    assert makespan(orders, dataclasses.replace(costs, per_action_s=0.25), lambda s: 0) == pytest.approx(
        makespan(orders, costs, lambda s: 0) + 4 * 0.25
    )


@pytest.mark.parametrize("schedule", ["interleaved1f1b", "interleavedzb", "zbv", "dualpipev"])
def test_multistage_prediction_grows_by_at_least_a_ranks_runtime(schedule):
    micro = 4
    base = predict_multistage(hand_profile(), 2, 1, micro, IDEAL, schedule=schedule)
    slow = predict_multistage(_with_runtime(0.6, schedule, micro=micro), 2, 1, micro, IDEAL, schedule=schedule)
    assert base is not None and slow is not None
    actions = len(schedule_orders(schedule, 2, micro)[0])
    assert {stage_rank(schedule, s, 2) for s in range(4)} == {0, 1}
    # every action of the busiest rank pays its share of 0.6 s; waits can only add to it
    assert slow.step_s - base.step_s >= 0.6 - 1e-9 and actions >= 4 * micro


def test_the_probe_runs_what_torch_runs():
    assert runs("zbv", 2, 2) and runs("dualpipev", 2, 4) and not runs("dualpipev", 2, 2)
    assert not runs("gpipe", 1, 4) and not runs("nope", 2, 4)


@pytest.mark.timeout(180)
def test_a_real_measurement_in_k_processes_on_tiny_stages():
    """Two real gloo processes run every schedule × M that torch runs on tiny stages: a positive,
    finite step per triple, nothing for what torch refuses, no process group left behind."""
    rows = measure_runtime_overhead(schedules=SCHEDULES, stages=[2], microbatches=[2, 4], steps=2)
    expected = {(s, m) for s in SCHEDULES for m in (2, 4) if not (s == "dualpipev" and m < 4)}
    assert {(r.schedule, r.microbatches) for r in rows} == expected
    assert all(r.stages == 2 and 0 < r.seconds < 10 and math.isfinite(r.seconds) for r in rows)
    assert not dist.is_initialized()
