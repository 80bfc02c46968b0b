"""``--one-device``'s serial baseline: one optimiser step on a whole batch, whatever the method's
micro-batches (the pipelined method feeds its runs in M micro-batches of B/M)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

import layerpar.bench.common as common
from layerpar.bench.one_device import serial_step_times
from layerpar.config import load_config, replace
from layerpar.parallel.methods import micro_batches

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.timeout(120)
def test_serial_steps_on_whole_batches_when_the_method_feeds_micro_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    config = replace(
        load_config(ROOT / "configs/diffusion_dit_mnist.yaml"),
        data={"train_limit": 128, "test_limit": 64},
        train={"batch_size": 32},
        parallel={"stages": 2},
    )
    assert micro_batches(config) == 2  # the pipelined method at K = 2: B/2 per micro-batch
    seen: list[int] = []
    real_forward = common.forward

    def counting_forward(model: Any, x: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        seen.append(x.shape[0])
        return real_forward(model, x, cond)

    monkeypatch.setattr(common, "forward", counting_forward)  # a spy: the real forward runs
    times = serial_step_times(config, torch.device("cpu"), warmup=1, steps=2)
    assert len(times) == 2 and all(t > 0 for t in times)
    assert seen == [32, 32, 32]
