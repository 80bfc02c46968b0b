"""Real gloo processes reproduce the in-process reference trainer, and the oracle property holds
across processes.

Each ``launch_local`` call starts stages × replicas spawned workers (a few seconds each), so the
set of runs is kept small: every run mixes a serial warm-up, layer-parallel steps and a serial
hybrid end, so both step programs and both transitions are compared.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as torch_mp

from layerpar.checkpoint import load_checkpoint
from layerpar.config import RunConfig, load_config
from layerpar.launchers.env import free_port
from layerpar.launchers.local import launch_local
from layerpar.parallel.checkpoints import latest_set
from layerpar.parallel.methods import micro_batches
from layerpar.parallel.trainer import LayerParallelTrainer
from tests.helpers.oracle import distributed_oracle_rank, relative_error

STEPS = 25  # 800 training images / batch 32, one epoch


def _config(out_dir: Path, name: str, stages: int, replicas: int, dtype: str, method: str, *extra: str) -> RunConfig:
    return load_config(
        None,
        [
            "data.dataset=digits",
            "data.train_limit=800",
            "data.test_limit=128",
            "model.name=resnet20",
            f"parallel.stages={stages}",
            f"parallel.replicas={replicas}",
            "parallel.balance=blocks",  # "time" would profile, and ranks could cut differently
            f"train.dtype={dtype}",
            "train.batch_size=32",
            "train.epochs=1",
            "train.progress=false",
            f"train.out_dir={out_dir}",
            f"train.run_name={name}",
            f"layerpar.method={method}",
            "layerpar.warmup_epochs=0.3",  # 8 serial steps
            "layerpar.serial_final_epochs=0.2",  # 5 serial steps at the end
            "layerpar.bn_reestimate_batches=2",
            *extra,
        ],
    )


def _records(run_dir: Path, kind: str) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


def _close(a: float, b: float, rel: float) -> bool:
    return abs(a - b) <= rel * max(1.0, abs(b))


def _assert_same_run(got_dir: Path, ref_dir: Path, rel: float, micro: int = 1) -> None:
    """``micro`` > 1: the pipelined method's micro-batches, a loop step each, no serial phases."""
    got, ref = _records(got_dir, "step"), _records(ref_dir, "step")
    assert [r["step"] for r in got] == [r["step"] for r in ref] == list(range(STEPS * micro))
    assert [r["serial"] for r in got] == [r["serial"] for r in ref]
    assert {r["serial"] for r in ref} == ({0.0, 1.0} if micro == 1 else {0.0})
    timing = {"step_time_s", "train_time_s", "samples_per_s", "kind"}
    for g, r in zip(got, ref):
        assert set(g) == set(r), (set(g) ^ set(r))
        for key in set(r) - timing:
            if r[key] is None or g[key] is None:
                assert g[key] == r[key], (r["step"], key)
                continue
            assert _close(g[key], r[key], rel), (r["step"], key, g[key], r[key])

    got_model = load_checkpoint(got_dir / "model.pt")["model"]
    ref_model = load_checkpoint(ref_dir / "model.pt")["model"]
    assert got_model.keys() == ref_model.keys()
    floats = [k for k in ref_model if ref_model[k].is_floating_point()]
    for key in ref_model:
        assert got_model[key].dtype == ref_model[key].dtype, key
        if key not in floats:
            assert torch.equal(got_model[key], ref_model[key]), key
    assert relative_error([got_model[k] for k in floats], [ref_model[k] for k in floats]) <= rel
    for key in floats:
        scale = max(1.0, float(ref_model[key].double().norm()))
        assert float((got_model[key].double() - ref_model[key].double()).norm()) <= rel * scale, key

    got_acc = [r["test_acc"] for r in _records(got_dir, "epoch")]
    ref_acc = [r["test_acc"] for r in _records(ref_dir, "epoch")]
    assert len(got_acc) == len(ref_acc) == 1
    # One flipped borderline prediction out of 128 is allowed in float32.
    assert abs(got_acc[0] - ref_acc[0]) <= (0.0 if rel < 1e-9 else 1.0 / 128 + 1e-12)


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.parametrize(
    ("stages", "replicas", "dtype", "method", "extra"),
    [
        pytest.param(2, 1, "float64", "al", (), id="K2-float64-al"),
        pytest.param(3, 1, "float64", "penalty", ("layerpar.beta_final=0.1",), id="K3-float64-penalty-betaramp"),
        pytest.param(2, 1, "float32", "penalty", (), id="K2-float32-penalty"),
        pytest.param(3, 1, "float32", "al", ("layerpar.al_step_clip=1.0",), id="K3-float32-al-clip"),
        pytest.param(2, 2, "float64", "al", (), id="K2xR2-float64-al"),
        pytest.param(3, 1, "float64", "delayed", (), id="K3-float64-delayed"),
        pytest.param(2, 2, "float32", "delayed", (), id="K2xR2-float32-delayed"),
        pytest.param(3, 1, "float64", "pipelined", ("layerpar.accumulate=1",), id="K3-float64-pipelined"),
        pytest.param(3, 1, "float64", "corrected", ("layerpar.accumulate=1",), id="K3-float64-corrected"),
        pytest.param(2, 2, "float32", "pipelined", ("layerpar.warmup_epochs=0", "layerpar.serial_final_epochs=0"),
                     id="K2xR2-float32-pipelined-micro2"),
    ],
)
def test_processes_reproduce_the_in_process_reference(tmp_path, stages, replicas, dtype, method, extra):
    ref = LayerParallelTrainer(_config(tmp_path, "ref", stages, replicas, dtype, method, *extra)).fit()
    config = _config(tmp_path, "dist", stages, replicas, dtype, method, *extra)
    summary = launch_local(config, timeout_s=150)
    assert summary is not None
    micro = micro_batches(config)
    # summary.json counts optimiser steps (batches); micro-steps separately.
    assert summary["steps"] == STEPS and summary["micro_steps"] == STEPS * micro
    assert summary["stages"] == stages and summary["replicas"] == replicas
    assert summary["bounds"] == ref.record["bounds"]
    assert math.isfinite(summary["bytes_sent_total"]) and summary["bytes_sent_total"] > 0
    _assert_same_run(tmp_path / "dist", ref.run_dir, 1e-12 if dtype == "float64" else 1e-5, micro)
    # Every rank left its resumable shard, in one complete set.
    final_set = latest_set(tmp_path / "dist" / "checkpoint")
    assert final_set is not None
    assert sorted(map(int, final_set.manifest["shards"])) == list(range(stages * replicas))


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_oracle_property_across_processes(tmp_path):
    """Two gloo ranks, each with its module and an OracleAux over a private full copy of the
    model: the first-phase gradients equal serial backprop, and the adjoint rank 1 sends to
    rank 0 is the true one, so rank 0's AL targets sit at the fixed point (λ⁺ = h, μ⁺ = m)."""
    overrides = [
        "data.dataset=digits",
        "data.train_limit=64",
        "model.name=resnet20",
        "parallel.stages=2",
        "parallel.balance=blocks",
        "layerpar.method=al",
        "train.dtype=float64",
        "train.batch_size=32",
        "train.progress=false",
        f"train.out_dir={tmp_path}",
    ]
    torch_mp.spawn(distributed_oracle_rank, args=(2, free_port(), overrides, str(tmp_path)), nprocs=2, join=True)
    results = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    assert [r["stage"] for r in results] == [0, 1]
    got = [g for r in results for g in r["got"]]
    want = [g for r in results for g in r["want"]]
    assert len(got) == 65  # every parameter tensor of resnet20, each owned by one rank
    assert relative_error(got, want) < 1e-10
    for r in results:
        assert relative_error(r["got"], r["want"]) < 1e-10
    first = results[0]
    torch.testing.assert_close(first["multiplier_target"], first["oracle_multiplier"], rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(first["state_target"], first["h"], rtol=0, atol=1e-10)
