"""The cost model's stash prediction and its validation rows (bench/stash_model.py)."""

from __future__ import annotations

import pytest

from layerpar.bench.profile import BlockTimes, Profile, StageSaved
from layerpar.bench.stash_model import predict_stash, stash_validation


def _profile(blocks: int = 4, batch: int = 64) -> Profile:
    zeros = tuple(0.0 for _ in range(blocks))
    return Profile(
        model="m", dataset="d", input_shape=(1, 8, 8), batch_size=batch, balance="blocks", device="cpu",
        threads=1, dtype="float32", block_names=tuple("b" for _ in range(blocks)),
        param_bytes=tuple(1000 * (i + 1) for i in range(blocks)), param_counts=tuple(250 * (i + 1) for i in range(blocks)),
        activation_bytes=tuple(6400 for _ in range(blocks)), timings=(BlockTimes(batch, zeros, zeros),), aux=(),
        sgd_s_per_byte=0.0, adam_s_per_byte=0.0, boundary_s_per_byte=0.0, batch_s=0.0,
        stage_saved=(StageSaved(2, (0, 2, 4), (64000, 32000)), StageSaved(4, (0, 1, 2, 3, 4), (1, 2, 3, 4))),
    )


def test_module_k_holds_its_delay_plus_one_micro_batches_on_ceil_delay_over_m_plus_one_versions():
    two = predict_stash(_profile(), 2, micro=2)
    assert two is not None
    first, last = two
    assert (first.micro_batches, first.weight_versions) == (3, 2)
    assert first.weight_bytes == 2 * (1000 + 2000)
    # Per micro-batch of 32: half the profiled saved bytes, plus its output (half of 6400).
    assert first.activation_bytes == 3 * (32000 + 3200)
    assert last.total_bytes == 0
    four = predict_stash(_profile(), 4, micro=4)
    assert four is not None
    assert [(p.micro_batches, p.weight_versions) for p in four] == [(7, 3), (5, 2), (3, 2), (0, 0)]
    assert predict_stash(_profile(), 3) is None  # that cut was not profiled


def test_validation_pairs_each_measured_module_with_its_prediction():
    measured = {"micro_batches": 3, "weight_versions": 2, "weight_bytes": 6000, "activation_bytes": 100000,
                "total_bytes": 106000}
    row = {"arm": "layerpar", "devices": 2, "config": {"layerpar": {"accumulate": 2}},
           "stash_bytes_per_rank": [measured, dict.fromkeys(measured, 0)]}
    rows = stash_validation(_profile(), [row, {"arm": "ddp", "devices": 2}])
    assert [r["stage"] for r in rows] == [0, 1]
    assert rows[0]["total_error"] == pytest.approx((6000 + 3 * 35200 - 106000) / 106000)
    assert rows[1]["total_error"] is None  # nothing to compare against: the last module stashes nothing
