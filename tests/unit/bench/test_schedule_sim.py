"""The replay of torch's multi-stage pipeline orders (bench/schedule_sim.py) and the cost model
built on it (costmodel.predict_multistage)."""

from __future__ import annotations

from collections import Counter

import pytest

from layerpar.bench.costmodel import Link
from layerpar.bench.costmodel_multistage import predict_multistage
from layerpar.bench.multistage_arms import SCHEDULES, stage_ids
from layerpar.bench.predict import predict
from layerpar.bench.schedule_sim import Action, StageCosts, makespan, schedule_orders, stage_rank
from tests.unit.bench.fakes import hand_profile

IDEAL = Link(0.0, 1e30, "ideal")


def _gpipe(ranks: int, micro: int) -> dict[int, list[Action]]:
    return {
        r: [Action("F", r, m) for m in range(micro)] + [Action("B", r, m) for m in range(micro)]
        for r in range(ranks)
    }


def test_gpipe_replay_is_the_closed_form_bubble():
    costs = StageCosts((1.0, 1.0), (2.0, 2.0), (0.0,))
    # (M + K − 1)·(f + b) with M = 4, K = 2
    assert makespan(_gpipe(2, 4), costs, lambda s: s) == pytest.approx(15.0)


def test_a_cross_rank_hop_costs_one_message_each_way():
    costs = StageCosts((1.0, 1.0), (2.0, 2.0), (0.5,))
    # one micro-batch: F0, hop, F1, B1, hop, B0
    assert makespan(_gpipe(2, 1), costs, lambda s: s) == pytest.approx(1 + 0.5 + 1 + 2 + 0.5 + 2)


def test_an_order_that_waits_forever_is_refused():
    orders = {0: [Action("B", 0, 0), Action("F", 0, 0)], 1: [Action("F", 1, 0), Action("B", 1, 0)]}
    with pytest.raises(ValueError, match="deadlocks"):
        makespan(orders, StageCosts((1.0, 1.0), (1.0, 1.0), (0.0,)), lambda s: s)


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize(("ranks", "micro"), [(2, 4), (2, 8), (3, 6)])
def test_torch_orders_run_every_micro_batch_once_on_the_arms_stages(schedule, ranks, micro):
    orders = schedule_orders(schedule, ranks, micro)
    assert orders is not None
    for rank, actions in orders.items():
        held = set(stage_ids(schedule, rank, ranks))  # what the bench arm builds on this rank
        assert {a.stage for a in actions} == held
        assert all(stage_rank(schedule, a.stage, ranks) == rank for a in actions)
        kinds = Counter((a.kind, a.stage) for a in actions)
        for stage in held:
            assert kinds[("F", stage)] == micro
            # a full backward, or its input and weight halves
            assert kinds[("B", stage)] + kinds[("I", stage)] == micro
            assert kinds[("I", stage)] == kinds[("W", stage)]


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_every_schedule_beats_gpipe_on_balanced_stages(schedule):
    ranks, micro = 2, 8
    costs = StageCosts((1.0,) * 4, (2.0,) * 4, (0.0,) * 3)
    span = makespan(schedule_orders(schedule, ranks, micro), costs, lambda s: stage_rank(schedule, s, ranks))
    work = micro * 2 * 3.0  # each rank: two stages of f + b per micro-batch
    gpipe = (micro + ranks - 1) * 6.0  # the same model cut in K stages of two halves each
    assert work <= span < gpipe


def test_zero_bubble_halves_fill_the_bubble():
    costs = StageCosts((1.0,) * 4, (2.0,) * 4, (0.0,) * 3)
    spans = {
        s: makespan(schedule_orders(s, 2, 4), costs, lambda st, s=s: stage_rank(s, st, 2))
        for s in ("interleaved1f1b", "interleavedzb")
    }
    assert spans["interleavedzb"] < spans["interleaved1f1b"]


def test_multistage_prediction_adds_batch_optimiser_and_messages():
    prof = hand_profile()  # 4 blocks: one per virtual stage at K = 2
    ideal = predict_multistage(prof, 2, 1, 4, IDEAL, schedule="interleaved1f1b")
    assert ideal is not None and ideal.bounds == (0, 1, 2, 3, 4)
    orders = schedule_orders("interleaved1f1b", 2, 4)
    # micro-batch 2: forward 0.25 s, backward 0.5 s per block; each rank steps 200 bytes · 1 ms
    span = makespan(orders, StageCosts((0.25,) * 4, (0.5,) * 4, (0.0,) * 3), lambda s: s % 2)
    assert ideal.step_s == pytest.approx(0.1 + span + 0.2)
    assert ideal.comm_s == pytest.approx(0.0)
    slow = predict_multistage(prof, 2, 1, 4, Link(0.1, 1e30), schedule="interleaved1f1b")
    assert slow.step_s > ideal.step_s and slow.comm_s > 0
    assert slow.compute_s == pytest.approx(ideal.compute_s)


def test_multistage_contention_and_impossible_layouts():
    prof = hand_profile()
    base = predict("zbv", prof, 2, link=IDEAL, microbatches=4)
    assert predict("zbv", prof, 2, link=IDEAL, microbatches=4, contention=2.0).step_s > base.step_s
    assert predict_multistage(prof, 2, 1, 2, IDEAL, schedule="dualpipev") is None  # torch needs M ≥ 2K
    assert predict_multistage(prof, 3, 1, 6, IDEAL, schedule="zbv") is None  # 6 stages, 4 blocks
    assert predict_multistage(prof, 2, 1, 16, IDEAL, schedule="zbv") is None  # below one sample



def test_measured_split_halves_replace_the_even_share():
    """The zero-bubble schedules' I and W passes cost what the profile measured for them (on a
    CPU, more than one full backward together), not half a backward each."""
    import dataclasses

    orders = {0: [Action("F", 0, 0), Action("I", 0, 0), Action("W", 0, 0)]}
    costs = StageCosts((1.0,), (2.0,), ())
    assert makespan(orders, costs, lambda s: 0) == pytest.approx(1.0 + 2.0)
    measured = dataclasses.replace(costs, input_grad_s=(1.5,), weight_grad_s=(1.25,))
    assert makespan(orders, measured, lambda s: 0) == pytest.approx(1.0 + 1.5 + 1.25)


def test_a_profiled_split_slows_only_the_schedules_that_split():
    import dataclasses

    from layerpar.bench.profile import StageSplit

    # 4 stages of one block each at micro-batch 2 (M = 4): I and W each 0.75 of a backward
    split = StageSplit(4, (0, 1, 2, 3, 4), 2, (1.0,) * 4, (0.0, 0.75, 0.75, 0.75), (1.0, 0.75, 0.75, 0.75))
    assert split.shares() == ((0.0, 0.75, 0.75, 0.75), (1.0, 0.75, 0.75, 0.75))
    prof = dataclasses.replace(hand_profile(), split=(split,))
    assert prof.split_shares(4, 2) == split.shares() and prof.split_shares(6, 2) is None
    for schedule in ("interleavedzb", "zbv", "dualpipev"):
        plain = predict_multistage(hand_profile(), 2, 1, 4, IDEAL, schedule=schedule)
        slower = predict_multistage(prof, 2, 1, 4, IDEAL, schedule=schedule)
        assert slower.step_s > plain.step_s, schedule
    same = predict_multistage(prof, 2, 1, 4, IDEAL, schedule="interleaved1f1b")  # no I or W actions
    assert same.step_s == pytest.approx(predict_multistage(hand_profile(), 2, 1, 4, IDEAL, schedule="interleaved1f1b").step_s)


def test_a_send_holds_its_sender_on_a_link_that_copies_on_the_cpu():
    """gloo on a CPU writes a message into the socket in the posting thread: the sending rank is
    busy bytes / bandwidth before its next action; a link without copies only delays arrival."""
    import dataclasses

    from layerpar.bench.costmodel import get_link

    # one micro-batch over 2 ranks: F0, (send), F1, B1, (send), B0
    costs = StageCosts((1.0, 1.0), (2.0, 2.0), (0.5,))
    orders = {0: [Action("F", 0, 0), Action("F", 0, 1), Action("B", 0, 0), Action("B", 0, 1)],
              1: [Action("F", 1, 0), Action("B", 1, 0), Action("F", 1, 1), Action("B", 1, 1)]}
    free = makespan(orders, costs, lambda s: s)
    busy = makespan(orders, dataclasses.replace(costs, send_busy_s=(0.25,)), lambda s: s)
    # rank 0's second forward waits for its first send; the last backward arrives 0.25 s later
    assert busy > free
    assert makespan(_gpipe(2, 1), dataclasses.replace(costs, send_busy_s=(0.25,)), lambda s: s) == pytest.approx(
        1 + 0.5 + 1 + 2 + 0.5 + 2  # one message each way: arrival = done + p2p, as without
    )
    gloo = get_link("gloo-loopback")
    assert gloo.sender_copies and gloo.sender_busy(2e9) == pytest.approx(2e9 / gloo.bandwidth_Bps)
    assert get_link("nvlink").sender_busy(2e9) == 0.0 and gloo.sender_busy(0) == 0.0


def test_each_rank_s_compute_is_the_sum_of_its_actions():
    """What the report sets beside a pipeline arm's measured breakdown (report/rank_compute.py)."""
    from layerpar.bench.costmodel import predict_pipeline

    # hand profile at micro-batch 2: forward 0.25 s, backward 0.5 s per block, one block a stage
    multi = predict_multistage(hand_profile(), 2, 1, 4, IDEAL, schedule="interleaved1f1b")
    assert multi.rank_compute_s == pytest.approx((2 * 4 * 0.75, 2 * 4 * 0.75))  # 2 stages × M
    closed = predict_pipeline(hand_profile(), 2, 1, 4, IDEAL)  # 2 blocks a stage
    assert closed.rank_compute_s == pytest.approx((4 * 1.5, 4 * 1.5))
