"""``train.precision: bf16``: every module computes under torch.autocast (CPU bf16 here), its
weights stay float32 (the master copy), and activations and gradients cross module boundaries
in bf16.  Agreement with fp32 is stated against the yardstick of plain bf16 autocast: the
layer-parallel paths may not lose more to bf16 than serial backprop itself does."""

from __future__ import annotations

import pytest
import torch

from layerpar.parallel.trainer import LayerParallelTrainer, SerialTrainer
from tests.helpers.oracle import digits_config, relative_error, run_capturing

MLP = ("model.name=mlp", "model.hidden=64", "model.depth=6", "train.dtype=float32", "train.batch_size=64")


def _first_update_gradients(tmp_path, precision: str, method: str) -> list[torch.Tensor]:
    """Module 0's gradient at the first step it applies one (pipelined: step 2 at K = 2)."""
    config = digits_config(tmp_path, *MLP, f"layerpar.method={method}", "layerpar.accumulate=1"
                           if method == "pipelined" else "layerpar.beta=0.01", f"train.precision={precision}")
    trainer = LayerParallelTrainer(config)
    grads, _ = run_capturing(trainer, 3, capture_after=1)
    step = 2 if method == "pipelined" else 0
    return grads[step][0]


def _serial_gradients(tmp_path, precision: str) -> list[torch.Tensor]:
    trainer = SerialTrainer(digits_config(tmp_path, *MLP, f"train.precision={precision}"))
    trainer.runner.begin(0, 0.01, serial=True)
    trainer.runner.run(trainer.runner.program(serial=True)[:2])
    return trainer.workers[0].stage_gradients()


@pytest.mark.parametrize("method", ["pipelined", "al"])
def test_bf16_gradients_agree_with_fp32_as_well_as_plain_autocast_does(tmp_path, method):
    yardstick = relative_error(_serial_gradients(tmp_path, "bf16"), _serial_gradients(tmp_path, "fp32"))
    assert 1e-4 < yardstick < 0.1  # bf16 really ran, and it is close on this model
    error = relative_error(_first_update_gradients(tmp_path, "bf16", method),
                           _first_update_gradients(tmp_path, "fp32", method))
    # Stated tolerance: 10 % relative, and at most 3x what bf16 costs serial backprop here.
    assert error < 0.1 and error < 3 * yardstick, (error, yardstick)


def test_bf16_sends_half_the_bytes_keeps_float32_weights_and_trains_as_well(tmp_path):
    runs = {}
    for precision in ("fp32", "bf16"):
        config = digits_config(tmp_path, *MLP, "layerpar.method=pipelined", "train.epochs=3",
                               f"train.precision={precision}", f"train.run_name={precision}")
        trainer = LayerParallelTrainer(config)
        runs[precision] = trainer.fit()
        assert all(p.dtype == torch.float32 for p in trainer.model.parameters())
    fp32, bf16 = runs["fp32"].record, runs["bf16"].record
    # The pipelined method sends only boundary activations and gradients: bf16 halves them exactly.
    assert bf16["bytes_sent_total"] * 2 == fp32["bytes_sent_total"]
    assert abs(bf16["final_eval"]["test_loss"] - fp32["final_eval"]["test_loss"]) < 0.1 * fp32["final_eval"]["test_loss"]
    assert abs(bf16["final_test_acc"] - fp32["final_test_acc"]) < 0.03
