"""The scaling model's formulas on hand-made profiles with known numbers (no timing)."""

from __future__ import annotations

import json

import pytest

from layerpar.bench.costmodel import (
    LINKS,
    Link,
    get_link,
    predict_ddp,
    predict_layerpar,
    predict_pipeline,
    predict_serial,
)
from layerpar.bench.predict import predict
from layerpar.bench.profile import AuxTimes, BlockTimes, Profile, partition_bounds, partition_costs
from layerpar.errors import ConfigError
from layerpar.parallel.partition import balanced_bounds
from tests.unit.bench.fakes import hand_profile

LINK = Link(latency_s=0.05, bandwidth_Bps=80.0)
IDEAL = Link(latency_s=0.0, bandwidth_Bps=1e30)


def test_link_p2p_and_ring_allreduce():
    assert LINK.p2p(80) == pytest.approx(0.05 + 1.0)
    assert LINK.p2p(0) == 0.0
    # 2(n−1)/n · bytes/bandwidth + 2(n−1) · latency
    assert LINK.allreduce(40, 2) == pytest.approx(0.5 + 0.1)
    assert LINK.allreduce(800, 4) == pytest.approx(1.5 * 10 + 6 * 0.05)
    assert LINK.allreduce(800, 1) == 0.0


def test_named_links_and_overrides():
    assert set(LINKS) == {"gloo-loopback", "nvlink", "infiniband"}
    nv = get_link("nvlink")
    assert nv.latency_s == pytest.approx(5e-6) and nv.bandwidth_Bps == pytest.approx(150e9)
    slow = get_link("nvlink", latency_s=1e-3)
    assert slow.latency_s == 1e-3 and slow.bandwidth_Bps == nv.bandwidth_Bps
    fat = get_link("infiniband", bandwidth_Bps=1e12)
    assert fat.bandwidth_Bps == 1e12 and fat.latency_s == LINKS["infiniband"].latency_s
    assert LINKS["nvlink"].latency_s == pytest.approx(5e-6)  # the defaults are not mutated
    with pytest.raises(ConfigError, match="valid"):
        get_link("carrier-pigeon")
    with pytest.raises(ConfigError):
        Link(latency_s=0.0, bandwidth_Bps=0.0)


def test_serial():
    p = predict_serial(hand_profile())
    assert p.step_s == pytest.approx(0.1 + 12.0 + 0.4)
    assert p.comm_s == 0.0


def test_layerpar_follows_the_phase_program():
    p = predict_layerpar(hand_profile(), 2, 1, LINK)
    assert p is not None and p.bounds == (0, 2, 4)
    # A0 = batch + aux fwd + f+b + half the boundary elementwise work + opt = 0.1+0.5+6+0.4+0.2
    # A1 = 0.1 + 0.5 + 6 + 0.2;  stage 0 waits for the adjoint: A1 + p2p(80 B) = 7.85 > 7.2
    # ready0 = 7.85 + aux bwd 0.25 + 0.4;  step = ready0 + allreduce(40 B, 2) + Adam 0.4
    assert p.step_s == pytest.approx(7.85 + 0.65 + 0.6 + 0.4)
    assert p.comm_s == pytest.approx(1.05 + 0.6)


def test_pipelined_layerpar_is_micro_batches_of_the_slowest_stage():
    """method pipelined, K=2: M = 2 micro-batches of 4; per micro-batch a stage computes f+b of
    its two blocks at batch 4 (= 3 s) and sends its boundary (40 B at batch 4) one way."""
    p = predict_layerpar(hand_profile(method="pipelined"), 2, 1, LINK)
    assert p is not None and p.bounds == (0, 2, 4) and p.microbatches is None
    tick = 3.0 + LINK.p2p(40)
    assert p.step_s == pytest.approx(0.1 + 2 * tick + 0.2)  # + the larger stage's SGD step
    assert p.comm_s == pytest.approx(2 * LINK.p2p(40))
    # An explicit accumulate replaces the default M: 4 micro-batches of 2 (f+b 1.5 s, 20 B).
    four = predict_layerpar(hand_profile(method="pipelined", accumulate=4), 2, 1, LINK)
    assert four.step_s == pytest.approx(0.1 + 4 * (1.5 + LINK.p2p(20)) + 0.2)
    assert predict_layerpar(hand_profile(method="pipelined", accumulate=16), 2, 1, LINK) is None


def test_layerpar_without_waits_is_the_issue_formula():
    """With an ideal link and no elementwise work: max_k[f+b+aux+opt] + Adam."""
    prof = hand_profile(boundary_s_per_byte=0.0, batch_s=0.0)
    p = predict_layerpar(prof, 2, 1, IDEAL)
    assert p.step_s == pytest.approx(max(6 + 0.5 + 0.25 + 0.2, 6 + 0.5 + 0.2) + 0.4)


def test_layerpar_with_replicas_uses_the_shard_and_syncs_stages():
    prof = hand_profile(aux=(AuxTimes(2, 4, (0, 2, 4), (0.25,), (0.125,), 40),),
                        boundary_s_per_byte=0.0, batch_s=0.0, adam_s_per_byte=0.0)
    p = predict_layerpar(prof, 2, 2, LINK)
    # batch 4: f+b of a stage = 3; stage sync allreduce(200 B, 2) = 2.5 + 0.1
    a1 = 0.25 + 3 + 2.6 + 0.2
    ready0 = max(0.25 + 3 + 2.6 + 0.2, a1 + LINK.p2p(40)) + 0.125
    assert p.step_s == pytest.approx(ready0 + LINK.allreduce(40, 4))
    assert p.devices == 4


def test_contention_scales_multi_device_compute_only():
    prof = hand_profile(boundary_s_per_byte=0.0, batch_s=0.0, sgd_s_per_byte=0.0, adam_s_per_byte=0.0)
    one = predict_layerpar(prof, 2, 1, IDEAL)
    two = predict_layerpar(prof, 2, 1, IDEAL, contention=2.0)
    assert two.step_s == pytest.approx(2 * one.step_s)
    assert predict_layerpar(prof, 1, 1, IDEAL, contention=2.0).step_s == pytest.approx(12.0)


def test_ddp():
    p = predict_ddp(hand_profile(), 2, LINK)
    # batch 4 (scaled from the one measured batch): Σ(f+b) = 6; opt 0.4; allreduce(400 B, 2) = 5 + 0.1
    assert p.step_s == pytest.approx(0.1 + 6 + 0.4 + 5.1)
    assert predict_ddp(hand_profile(), 9, LINK) is None  # 8 samples cannot feed 9 devices


def test_pipeline_bubble_and_transfers():
    p = predict_pipeline(hand_profile(), 2, 1, 2, LINK)
    # micro-batch 4: f+b per stage = 3; (M+K−1)·3 = 9; (M+K−1)·2 transfers of 40 B = 3·2·0.55
    assert p.step_s == pytest.approx(0.1 + 9 + 3.3 + 0.2)
    one_f_one_b = predict("1f1b", hand_profile(), 2, link=LINK, microbatches=2)
    assert one_f_one_b.step_s == pytest.approx(p.step_s)
    assert predict_pipeline(hand_profile(), 2, 1, 16, LINK) is None  # micro-batch below one sample


def test_unbalanced_pipeline_uses_the_flow_shop_bound():
    prof = hand_profile(timings=(BlockTimes(4, (0.5, 0.5, 0.5, 2.5), (0.0,) * 4),
                                 BlockTimes(8, (1.0, 1.0, 1.0, 5.0), (0.0,) * 4)))
    p = predict_pipeline(prof, 2, 1, 2, IDEAL)
    assert p.bounds == (0, 3, 4)
    # micro-batch 4: stages take 1.5 s and 2.5 s; Σ + (M−1)·max = 4 + 2.5 (not (M+K−1)·max = 7.5);
    # the slower optimiser step is stage 0's 300 bytes · 1 ms
    assert p.step_s == pytest.approx(0.1 + 6.5 + 0.3, rel=1e-9)


@pytest.mark.parametrize("arm", ["layerpar", "gpipe", "1f1b"])
def test_more_stages_than_blocks_cannot_be_cut(arm):
    assert predict(arm, hand_profile(), 5, link=LINK) is None
    assert predict(arm, hand_profile(), 64, link=LINK) is None


def test_serial_only_on_one_device_and_unknown_arm():
    assert predict("serial", hand_profile(), 2, link=LINK) is None
    with pytest.raises(ConfigError, match="valid"):
        predict("zero3", hand_profile(), 2, link=LINK)


def test_partition_follows_the_balance_rule():
    prof = hand_profile(timings=(BlockTimes(8, (1.0, 1.0, 1.0, 9.0), (0.0, 0.0, 0.0, 0.0)),))
    assert partition_bounds(prof, 2) == tuple(balanced_bounds([1.0, 1.0, 1.0, 9.0], 2)) == (0, 3, 4)
    assert partition_bounds(hand_profile(balance="blocks", timings=prof.timings), 2) == (0, 2, 4)
    params = hand_profile(balance="params", param_counts=(1, 1, 1, 50))
    assert partition_costs(params) == [2.0, 2.0, 2.0, 51.0]
    assert partition_bounds(params, 2) == (0, 3, 4)
    assert partition_bounds(prof, 5) is None and partition_bounds(prof, 0) is None


def test_time_balance_uses_the_runtime_profiling_batch():
    """setup.choose_bounds profiles at min(B, 64): the model cuts on the same batch."""
    big = hand_profile(batch_size=128, timings=(
        BlockTimes(64, (1.0, 1.0, 1.0, 1.0), (0.0,) * 4),
        BlockTimes(128, (1.0, 1.0, 1.0, 9.0), (0.0,) * 4)))
    assert partition_bounds(big, 2) == (0, 2, 4)


def test_block_times_interpolate_and_stay_monotone():
    prof = hand_profile(timings=(BlockTimes(2, (1.0,) * 4, (1.0,) * 4),
                                 BlockTimes(4, (5.0,) * 4, (5.0,) * 4),  # noisy: dearer than batch 8
                                 BlockTimes(8, (3.0,) * 4, (3.0,) * 4)))
    forward, backward = prof.block_times(4)
    assert forward == [3.0] * 4 and backward == [3.0] * 4
    assert prof.block_times(3)[0] == pytest.approx([2.0] * 4)
    assert prof.block_times(16)[0] == pytest.approx([3.0] * 4)  # flat extrapolation of 4→8 after min
    assert prof.timings[1].forward_s == (5.0,) * 4  # raw measurements kept


def test_aux_times_rescales_a_nearby_batch_and_names_missing_k():
    prof = hand_profile()
    assert prof.aux_times(2, 4).prefix_forward_s == pytest.approx((0.25,))
    with pytest.raises(KeyError, match="K=4"):
        prof.aux_times(4, 8)


def test_profile_json_round_trip():
    prof = hand_profile(contention=1.3)
    again = Profile.from_dict(json.loads(json.dumps(prof.to_dict())))
    assert again == prof
    assert predict_layerpar(again, 2, 1, LINK) == predict_layerpar(prof, 2, 1, LINK)
