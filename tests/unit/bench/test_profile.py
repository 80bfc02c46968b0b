"""A real (tiny) profile: ResNet-20 on sklearn digits; positive numbers, consistent cuts."""

from __future__ import annotations

import json

import pytest
import torch

from layerpar.bench.costmodel import get_link
from layerpar.bench.predict import predict
from layerpar.bench.profile import Profile, partition_bounds
from layerpar.bench.profile_contention import measure_contention
from layerpar.bench.profile_measure import default_batch_sizes, measure_profile
from layerpar.config import load_config, replace
from layerpar.parallel.partition import split
from layerpar.parallel.setup import build_model_for, build_setup


@pytest.fixture(scope="module")
def config():
    return load_config("configs/digits_tiny.yaml", ["data.dataset=digits"])


@pytest.fixture(scope="module")
def profile(config):
    return measure_profile(config, device="cpu", repeats=1, stages=[2, 3, 11, 12], microbatches=[4],
                           replicas=[1, 2])


def test_default_batch_sizes():
    assert default_batch_sizes(128, [4], [1, 2]) == [2, 4, 8, 16, 32, 64, 128]
    assert default_batch_sizes(100, [3]) == [2, 3, 6, 12, 25, 33, 50, 100]


def test_tiny_profile_is_positive_and_complete(profile, config):
    model, _, _ = build_model_for(config)
    n = len(model)
    assert profile.num_blocks == n and profile.batch_size == 64 and profile.balance == "blocks"
    assert [t.batch for t in profile.timings] == default_batch_sizes(64, [4], [1, 2])
    for t in profile.timings:
        assert len(t.forward_s) == len(t.backward_s) == n
        assert all(f > 0 for f in t.forward_s) and all(b > 0 for b in t.backward_s)
    assert all(a > 0 for a in profile.activation_bytes)
    assert profile.param_bytes == tuple(4 * sum(p.numel() for p in b.parameters()) for b in model.blocks)
    assert profile.activation_bytes[0] == 64 * 16 * 8 * 8 * 4  # stem output: 16 channels, 8×8
    for value in (profile.sgd_s_per_byte, profile.adam_s_per_byte, profile.boundary_s_per_byte, profile.batch_s):
        assert value > 0
    assert profile.threads == 1 and profile.device.startswith("cpu")
    assert profile.contention is None


def test_aux_profiled_per_k_and_shard(profile):
    measured = sorted({(a.stages, a.batch) for a in profile.aux})
    assert measured == [(2, 32), (2, 64), (3, 32), (3, 64), (11, 32), (11, 64)]
    for a in profile.aux:
        assert len(a.prefix_forward_s) == len(a.prefix_backward_s) == a.stages - 1
        assert all(t > 0 for t in a.prefix_forward_s + a.prefix_backward_s)
        # a longer prefix costs at least as much (it contains the shorter one)
        assert list(a.prefix_forward_s) == sorted(a.prefix_forward_s)
        assert a.bounds == partition_bounds(profile, a.stages)


def test_cuts_and_aux_match_the_runtime(profile, config):
    model, _, _ = build_model_for(config)
    for k in (2, 3, 11):
        assert partition_bounds(profile, k) == split(model, k, config.parallel.balance).bounds
    aux = next(a for a in profile.aux if a.stages == 3)
    setup = build_setup(replace(config, parallel={"stages": 3}))
    assert setup.partition.bounds == aux.bounds
    assert aux.param_bytes == 4 * sum(p.numel() for p in setup.aux.parameters())


def test_profile_leaves_global_state_alone(config):
    threads = torch.get_num_threads()
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    measure_profile(config, repeats=1, stages=[2], batch_sizes=[8])
    assert torch.get_num_threads() == threads
    assert torch.equal(torch.rand(3), expected)


def test_predictions_from_a_real_profile(profile):
    link = get_link("gloo-loopback")
    for arm in ("serial", "layerpar", "ddp", "gpipe", "1f1b"):
        k = 1 if arm == "serial" else 2
        p = predict(arm, profile, k, link=link, microbatches=4)
        assert p is not None and p.step_s > 0 and p.compute_s > 0
    assert predict("layerpar", profile, 2, 2, link=link).step_s > 0
    assert predict("layerpar", profile, 12, link=link) is None


def test_real_profile_json_round_trip(profile, tmp_path):
    assert Profile.from_dict(json.loads(json.dumps(profile.to_dict()))) == profile
    profile.save(tmp_path / "profile.json")
    assert Profile.load(tmp_path / "profile.json") == profile


@pytest.mark.slow
def test_contention_is_a_measured_positive_factor(config):
    factor = measure_contention(config, repeats=1, rounds=1)
    assert factor > 0


def test_aux_parameters_follow_the_runtime_options(config):
    al = replace(config, layerpar={"method": "al"}, aux={"label_conditioned_multipliers": True},
                 parallel={"stages": 2})
    prof = measure_profile(al, repeats=1, stages=[2], batch_sizes=[8])
    (aux,) = prof.aux
    assert aux.param_bytes == 4 * sum(p.numel() for p in build_setup(al).aux.parameters())


def test_the_profile_records_what_each_stage_saves_for_its_backward_per_cut(profile):
    """The activation side of the pipelined method's stash (bench/stash_model.py), per K."""
    assert [row.stages for row in profile.stage_saved] == [2, 3, 11]  # K = 12 cannot be cut
    for row in profile.stage_saved:
        assert row.bounds == partition_bounds(profile, row.stages)
        assert len(row.saved_bytes) == row.stages and all(b > 0 for b in row.saved_bytes)
    two = profile.stage_saved[0]
    assert profile.saved_bytes_at(2, 16) == (two.bounds, [b / 4 for b in two.saved_bytes])
    assert Profile.from_dict(profile.to_dict()).stage_saved == profile.stage_saved
    assert profile.saved_bytes_at(5, 16) is None


def test_the_profile_measures_each_2k_cuts_split_backward(profile):
    """The two-stages-per-rank schedules' cut (2K stages) at each micro-batch: full backward, and
    the I and W passes torch's zero-bubble schedules run instead (bench/costmodel_multistage)."""
    micro = profile.batch_size // 4
    assert [(row.stages, row.batch) for row in profile.split] == [(4, micro), (6, micro)]  # 2K ≤ 11 blocks
    for row in profile.split:
        assert row.bounds == partition_bounds(profile, row.stages)
        assert row.input_s[0] == 0.0 and row.weight_s[0] == row.backward_s[0]  # no input gradient first
        later = zip(row.backward_s[1:], row.input_s[1:], row.weight_s[1:])
        assert all(b > 0 and i > 0 and w > 0 for b, i, w in later)
    assert profile.split_shares(4, micro) == profile.split[0].shares()
    assert profile.split_shares(8, micro) is None
    assert Profile.from_dict(profile.to_dict()).split == profile.split
