"""The benchmark arms added beside serial/layerpar/ddp/pipelining: ``deepspeed``, ``serial-threads``,
``contention`` and ``layerpar-minimal`` run through the harness; ``layerpar-minimal`` is the ``layerpar`` arm's
math (one step of each gives the same parameters, float64, 2 gloo processes)."""

from __future__ import annotations

import glob
import importlib.util
import math
import os
import traceback
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist

from layerpar.bench.harness import run_arm
from layerpar.config import RunConfig, load_config, replace
from layerpar.launchers.env import contract
from tests.helpers.procs import spawn_ranks

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "digits_tiny.yaml"


def _tiny(**sections: dict[str, Any]) -> RunConfig:
    return replace(load_config(CONFIG), **sections)


def _check(result: dict[str, Any]) -> None:
    assert len(result["step_times"]) == 2
    assert all(t > 0 for t in result["step_times"])


@pytest.mark.timeout(120)
def test_serial_threads_runs_in_one_process_on_k_threads() -> None:
    result = run_arm("serial-threads", 1, _tiny(parallel={"stages": 2}), 2, 2, 4)
    _check(result)
    assert result["bytes_per_step"] == 0


@pytest.mark.timeout(120)
def test_contention_runs_a_serial_copy_in_each_of_k_processes_without_sending() -> None:
    result = run_arm("contention", 2, _tiny(parallel={"stages": 2}), 2, 2, 4)
    _check(result)
    assert result["bytes_per_step"] == 0 and len(result["peak_mem_mb_per_rank"]) == 2


@pytest.mark.timeout(120)
def test_layerpar_minimal_runs_and_sends_like_layerpar() -> None:
    config = _tiny(parallel={"stages": 2})
    minimal = run_arm("layerpar-minimal", 2, config, 2, 2, 4)
    _check(minimal)
    full = run_arm("layerpar", 2, config, 2, 2, 4)
    # The same messages: one adjoint per boundary and one AuxNet all-reduce per step.
    assert minimal["bytes_per_step"] == full["bytes_per_step"] > 0


@pytest.mark.slow
@pytest.mark.timeout(400)  # the first run JIT-compiles DeepSpeed's shared-memory op (~30-60 s)
def test_deepspeed_pipeline_arm() -> None:
    if importlib.util.find_spec("deepspeed") is None:
        pytest.skip("deepspeed is not installed (pip install deepspeed): the deepspeed arm is optional")
    buffers = set(glob.glob("/dev/shm/deepspeed_allreduce_buffer_*"))
    result = run_arm("deepspeed", 2, _tiny(parallel={"stages": 2}), 2, 2, 4)
    _check(result)
    # Per step: an activation forwards and a gradient backwards per micro-batch, and the loss.
    assert result["bytes_per_step"] > 0
    assert set(glob.glob("/dev/shm/deepspeed_allreduce_buffer_*")) <= buffers, "shared-memory buffers left behind"


# -------------------------------------------------------------------------------------------
# layerpar-minimal is the layerpar arm's math


def _equivalence_worker(rank: int, port: int, configs: list[RunConfig], steps: int, results: Any) -> None:
    os.environ.update(contract("127.0.0.1", port, rank, 2, rank))
    torch.set_num_threads(1)
    try:
        from layerpar.bench.arms import layerpar_runner
        from layerpar.bench.minimal_arm import build_step

        dist.init_process_group("gloo", init_method="env://", timeout=timedelta(seconds=60))
        outcomes = []
        try:
            for config in configs:
                total = 4  # the cosine schedule's length, as in a 4-step bench run
                start = _named(build_step(config, total)[1], "module.")
                step, module, aux = build_step(config, total)
                for i in range(steps):
                    step(i)
                minimal = {**_named(module, "module."), **_named(aux, "aux.")}
                runner = layerpar_runner(config, total)
                for i in range(steps):
                    runner.begin(i, config.layerpar.beta)
                    runner.run(runner.program(serial=False))
                    runner.take_metrics()
                full = {**_named(runner.worker.module, "module."), **_named(runner.worker.aux.net, "aux.")}
                assert minimal.keys() == full.keys()
                diffs = {k: float((minimal[k] - full[k]).abs().max()) if full[k].numel() else 0.0 for k in full}
                moved = max(float((full[k] - start[k]).abs().max()) for k in start)
                dtypes = {str(p.dtype) for p in runner.worker.module.parameters()}
                outcomes.append((config.layerpar.method, diffs, moved, dtypes))
        finally:
            dist.barrier()
            dist.destroy_process_group()
        results.put(("ok", rank, outcomes))
    except BaseException as error:  # noqa: BLE001
        results.put(("error", rank, f"{error!r}\n{traceback.format_exc()}"))


def _named(module: torch.nn.Module, prefix: str) -> dict[str, torch.Tensor]:
    """Parameters and float buffers (BatchNorm statistics), as float64 copies."""
    return {prefix + k: v.detach().double().clone() for k, v in module.state_dict().items() if v.is_floating_point()}


@pytest.mark.timeout(180)
def test_minimal_step_equals_layerpar_step_float64() -> None:
    """Same parameters, BatchNorm statistics and AuxNet after the same steps (penalty and AL;
    two steps, so the AuxNet gradients of one step must not leak into the next)."""
    configs = [_tiny(train={"dtype": "float64"}, layerpar={"method": method}, parallel={"stages": 2})
               for method in ("penalty", "al")]
    replies = spawn_ranks(_equivalence_worker, 2, (configs, 2), timeout=150)
    for _, rank, outcomes in replies:
        assert [o[0] for o in outcomes] == ["penalty", "al"]
        for method, diffs, moved, dtypes in outcomes:
            assert dtypes == {"torch.float64"}, (rank, method, dtypes)
            assert moved > 0, f"rank {rank} {method}: the steps did not change the module"
            worst = max(diffs, key=diffs.get)
            assert diffs[worst] <= 1e-12, f"rank {rank} {method}: {worst} differs by {diffs[worst]:.3e}"


@pytest.mark.timeout(120)
def test_pipelined_layerpar_arm_sends_an_activation_each_way_per_sample() -> None:
    """The layerpar arm with the pipelined method: a timed step is its 2 micro-batches, and each
    rank sends its boundary activation (rank 0) or its input gradient (rank 1) once per sample."""
    from layerpar.parallel.setup import build_setup

    config = _tiny(parallel={"stages": 2}, layerpar={"method": "pipelined", "warmup_epochs": 0,
                                                      "serial_final_epochs": 0})
    result = run_arm("layerpar", 2, config, 2, 2, 4)
    _check(result)
    shape = build_setup(config).boundary_shapes[0]
    boundary_bytes = config.train.batch_size * math.prod(shape) * 4  # float32, one full batch
    assert result["bytes_per_step"] == 2 * boundary_bytes
    assert len(result["bounds"]) == 3  # the cut it ran, for the cost model (bench/validate.py)
    # Where its timed steps went, per rank: compute on both, the stash's copies on the first
    # (the last module backpropagates at once and stashes nothing), parts adding up to the step.
    from layerpar.bench.breakdown import OTHER, ROWS, STEP

    per_rank = result["breakdown_ms_per_rank"]
    assert len(per_rank) == 2 and all(set(rank) == set(ROWS) for rank in per_rank)
    assert all(rank["forward"] > 0 and rank["backward"] > 0 for rank in per_rank)
    assert per_rank[0]["stash"] > 0 and per_rank[1]["stash"] == 0
    assert per_rank[1]["wait: receive"] > 0  # the last module's input comes from rank 0
    for rank in per_rank:
        parts = sum(rank[row] for row in ROWS if row != STEP)
        assert math.isclose(parts, rank[STEP], rel_tol=1e-9)
        assert rank[OTHER] >= 0 and math.isclose(rank[STEP], 1000 * sum(result["step_times"]) / 2, rel_tol=0.5)
    # The stash (parallel/stash_meter.py): rank 0 holds D_0 + 1 = 3 micro-batches on 2 weight
    # versions at its fullest (M = 2); the last module stashes nothing.
    first, last = result["stash_per_rank"]
    assert (first["micro_batches"], first["weight_versions"]) == (3, 2)
    assert first["weight_bytes"] > 0 and first["activation_bytes"] > 0
    assert last["total_bytes"] == 0


@pytest.mark.timeout(120)
def test_a_zero_bubble_arm_says_where_its_step_went_on_each_rank() -> None:
    """interleavedzb on 2 real gloo ranks: every rank times its forwards and both halves of its
    split backward, posts and waits for messages (each rank holds a stage next to one on the
    other rank), and the parts with the remainder add up to the step."""
    from layerpar.bench.breakdown import OTHER, STEP
    from layerpar.bench.pipeline_clock import PIPELINE_PARTS

    result = run_arm("interleavedzb", 2, _tiny(parallel={"stages": 2}), 1, 2, 4)
    _check(result)
    per_rank = result["breakdown_ms_per_rank"]
    assert len(per_rank) == 2 and result["stash_per_rank"] is None
    for rank in per_rank:
        assert list(rank) == [*PIPELINE_PARTS, OTHER, STEP]
        assert rank["forward"] > 0 and rank["backward: input"] > 0 and rank["backward: weight"] > 0
        assert rank["backward"] == 0 and rank["post p2p"] > 0 and rank["wait: p2p"] > 0
        assert math.isclose(sum(v for k, v in rank.items() if k != STEP), rank[STEP], rel_tol=1e-9)
    assert per_rank[1]["loss"] > 0  # stage 3 of 4, the last, is rank 1's
    assert len(result["bounds"]) == 5 and result["bounds"][0] == 0  # the 2K-stage cut it ran


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_corrected_arm_runs_the_corrected_method_and_sends_what_the_pipelined_method_sends() -> None:
    """``layerpar-corrected`` runs layerpar.method=corrected whatever the config's method: its
    heads stay on their workers, so its messages are the pipelined method's, byte for byte."""
    config = _tiny(parallel={"stages": 2}, layerpar={"method": "pipelined", "warmup_epochs": 0,
                                                      "serial_final_epochs": 0})
    corrected = run_arm("layerpar-corrected", 2, config, 2, 2, 4)
    _check(corrected)
    pipelined = run_arm("layerpar", 2, config, 2, 2, 4)
    assert corrected["bytes_per_step"] == pipelined["bytes_per_step"] > 0
    first, _ = corrected["stash_per_rank"]
    assert (first["micro_batches"], first["weight_versions"]) == (3, 2)
