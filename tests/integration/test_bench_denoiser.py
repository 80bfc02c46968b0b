"""``layerpar bench`` on the diffusion presets (a residual MLP on 2-D checkerboard, a DiT on
MNIST), in real gloo processes: every arm that runs a denoiser runs and is timed; three steps of
DDP, GPipe and 1F1B give serial backprop's parameters (float64); the arms that do not run a
denoiser say so; the CLI writes the summary, table and loss-vs-time plot."""

from __future__ import annotations

import json
import os
import traceback
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import yaml

from layerpar.bench.harness import run_arm
from layerpar.cli import main
from layerpar.config import RunConfig, load_config, replace
from layerpar.errors import ConfigError
from layerpar.launchers.env import contract
from tests.helpers.procs import spawn_ranks

ROOT = Path(__file__).resolve().parents[2]
TOY = {"model": {"hidden": 32, "depth": 4}, "data": {"train_limit": 512}, "train": {"batch_size": 64}}
DIT = {"data": {"train_limit": 128, "test_limit": 64}, "train": {"batch_size": 32}}


def _toy(**sections: dict[str, Any]) -> RunConfig:
    config = replace(load_config(ROOT / "configs/diffusion_toy.yaml"), **TOY)
    return replace(config, diffusion={"eval_samples": 64}, parallel={"stages": 2}, **sections)


def _dit(**sections: dict[str, Any]) -> RunConfig:
    config = replace(load_config(ROOT / "configs/diffusion_dit_mnist.yaml"), **DIT)
    return replace(config, diffusion={"eval_samples": 64}, parallel={"stages": 2}, **sections)


def _check(arm: str, result: dict[str, Any], sends: bool) -> None:
    assert len(result["step_times"]) == 2 and all(t > 0 for t in result["step_times"]), arm
    assert (result["bytes_per_step"] > 0) == sends, (arm, result["bytes_per_step"])
    assert result["peak_mem_mb_per_rank"] and max(result["peak_mem_mb_per_rank"]) == result["peak_mem_mb"]


@pytest.mark.timeout(240)
def test_every_denoiser_arm_runs_on_the_mlp() -> None:
    config = _toy()
    for arm in ("serial", "serial-threads"):
        _check(arm, run_arm(arm, 1, config, 1, 2, 2), sends=False)
    for arm in ("ddp", "gpipe", "1f1b"):
        _check(arm, run_arm(arm, 2, config, 1, 2, 2), sends=True)
    # layerpar-minimal writes out penalty/AL only; with AL it sends what the layerpar arm sends
    # (the layerpar arm with the preset's pipelined method runs in the CLI test).
    al = _toy(layerpar={"method": "al"})
    minimal, full = run_arm("layerpar-minimal", 2, al, 1, 2, 2), run_arm("layerpar", 2, al, 1, 2, 2)
    _check("layerpar-minimal", minimal, sends=True)
    _check("layerpar", full, sends=True)
    assert minimal["bytes_per_step"] == full["bytes_per_step"]


@pytest.mark.timeout(240)
def test_pipeline_and_layerpar_arms_run_on_the_dit() -> None:
    """The DiT's first stage hands on a transposed view (patch tokens) with its conditioning;
    every later stage survives torch's shape inference on uninitialised buffers (two of them
    per rank under interleaved 1F1B)."""
    config = _dit()
    for arm in ("gpipe", "interleaved1f1b", "layerpar"):
        _check(arm, run_arm(arm, 2, config, 1, 2, 2), sends=True)


@pytest.mark.parametrize("arm", ["deepspeed", "zbv", "dualpipev", "interleavedzb"])
def test_an_arm_without_denoisers_is_a_clear_error(arm: str) -> None:
    with pytest.raises(ConfigError, match=rf"'{arm}' does not run diffusion denoisers yet.*arms that do: .*gpipe"):
        run_arm(arm, 2, _toy(), 1, 2, 2)


# -------------------------------------------------------------------------------------------
# The exact arms take serial backprop's step (float64)


STEPS = 3
"""Three steps: at initialisation the layers that take the embedding are zero (adaLN-Zero, the
MLP's zero-initialised layers), so the embedder's gradient is zero at first, and only later
steps test that its replicas' gradients are summed over the stages (without the sum, the MLP's
differ by ~1e-7 after three)."""


def _oracle_worker(rank: int, port: int, configs: list[RunConfig], results: Any) -> None:
    os.environ.update(contract("127.0.0.1", port, rank, 2, rank))
    torch.set_num_threads(1)
    try:
        from layerpar.bench.arms import ddp_step, serial_step
        from layerpar.bench.common import broadcast_bounds
        from layerpar.bench.pipeline_stages import pipeline_step

        dist.init_process_group("gloo", init_method="env://", timeout=timedelta(seconds=120))
        outcomes = []
        try:
            for config in configs:
                step, serial = serial_step(config, 4)
                start = _named(serial)
                for i in range(STEPS):
                    step(i)
                bounds = broadcast_bounds(config)
                mine = _named(serial.slice(bounds[rank], bounds[rank + 1]))
                arms = {
                    "ddp": (ddp_step(config, 4), _named(serial)),
                    "gpipe": (pipeline_step(config, 4, "gpipe", 2), mine),
                    "1f1b": (pipeline_step(config, 4, "1f1b", 4), mine),
                }
                for arm, ((arm_step, module), expected) in arms.items():
                    for i in range(STEPS):
                        arm_step(i)
                    got = _named(module)
                    assert got.keys() == expected.keys(), (arm, sorted(got)[:3], sorted(expected)[:3])
                    diff = max(float((got[k] - expected[k]).abs().max()) for k in got)
                    outcomes.append((config.model.name, arm, diff, str(next(module.parameters()).dtype)))
                embedder = [k for k in start if k.startswith("embedder.")]
                moved = min(float((_named(serial)[k] - start[k]).abs().max()) for k in embedder)
                outcomes.append((config.model.name, "serial moved", moved, ""))
        finally:
            dist.barrier()
            dist.destroy_process_group()
        results.put(("ok", rank, outcomes))
    except BaseException as error:  # noqa: BLE001
        results.put(("error", rank, f"{error!r}\n{traceback.format_exc()}"))


def _named(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().double().clone() for k, v in module.state_dict().items() if v.is_floating_point()}


@pytest.mark.timeout(180)
def test_ddp_gpipe_1f1b_step_equals_serial_step_float64() -> None:
    """Same parameters after three steps, the embedder included (its replicas' gradients summed
    over the stages; every embedder tensor must have moved).  SGD, so that a rounding difference stays one (Adam's first step is
    about lr · sign(g) and would blow it up where g ≈ 0)."""
    sgd = {"name": "sgd", "lr": 0.1, "weight_decay": 5e-4}
    configs = [make(train={"dtype": "float64"}, optim=sgd) for make in (_toy, _dit)]
    replies = spawn_ranks(_oracle_worker, 2, (configs,), timeout=160)
    for _, rank, outcomes in replies:
        assert len(outcomes) == 8
        for model, arm, value, dtype in outcomes:
            if arm == "serial moved":
                assert value > 0, f"rank {rank} {model}: serial's steps did not move every embedder tensor"
            else:
                assert dtype == "torch.float64"
                assert value <= 1e-10, f"rank {rank} {model} {arm}: differs from serial by {value:.3e}"


# -------------------------------------------------------------------------------------------
# Through the CLI


@pytest.mark.timeout(240)
def test_cli_bench_and_train_on_a_tiny_denoiser(tmp_path: Path) -> None:
    preset = yaml.safe_load((ROOT / "configs/diffusion_toy.yaml").read_text())
    for section, values in {**TOY, "diffusion": {"eval_samples": 64}}.items():
        preset.setdefault(section, {}).update(values)
    preset["train"]["epochs"] = 2
    config = tmp_path / "tiny_toy.yaml"
    config.write_text(yaml.safe_dump(preset))
    code = main(["bench", "--config", str(config), "--arms", "serial,layerpar", "--stages", "2",
                 "--repeats", "1", "--steps", "2", "--warmup-steps", "1", "--train",
                 "--out", str(tmp_path), "--name", "b"])  # fmt: skip
    assert code == 0
    out = tmp_path / "b"
    rows = {r["arm"]: r for r in json.loads((out / "summary.json").read_text())["results"]}
    assert set(rows) == {"serial", "layerpar"}
    for row in rows.values():
        assert row["step_time_s_median"] > 0
        assert len(row["peak_mem_mb_per_rank"]) == row["devices"] and row["peak_mem_mb"] > 0
        # A denoiser's --train curve: the held-out loss (lower is better), no accuracy.
        assert row["final_test_loss"] > 0 and row.get("final_test_acc") is None
        assert all("test_loss" in point for point in row["epochs_log"])
    serial = rows["serial"]
    assert serial["target_loss"] == pytest.approx(serial["final_test_loss"] * 1.02)
    assert serial["time_to_target_s"] is not None  # serial reaches its own final loss + 2 %
    table = (out / "table.md").read_text()
    assert "peak mem/worker (MB)" in table and "final held-out loss" in table
    assert (out / "loss_vs_time.png").stat().st_size > 0
