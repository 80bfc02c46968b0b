"""A training step reads nothing back from the device: metrics stay tensors until the loop
logs them every ``train.log_every`` steps.  On the CPU a read-back is a call of
``Tensor.item`` / ``float`` / ``int`` / ``bool`` / ``tolist``; the test counts them (on a GPU
each would be a host sync, ``torch.cuda.set_sync_debug_mode`` catches the same)."""

from __future__ import annotations

import contextlib
import sys

import pytest
import torch

from layerpar.parallel.trainer import LayerParallelTrainer
from tests.helpers.oracle import digits_config

READ_BACKS = ("item", "__float__", "__int__", "__bool__", "tolist", "numpy")


@contextlib.contextmanager
def counting_read_backs(counts: dict[str, int]):
    originals = {name: getattr(torch.Tensor, name) for name in READ_BACKS}

    def counted(name):
        def wrapper(self, *args, **kwargs):
            # Adam keeps its step counter as a CPU tensor even for CUDA parameters: reading it
            # is no device sync, so torch.optim's own calls are not counted.
            caller = sys._getframe(1).f_code.co_filename
            if "torch/optim" not in caller.replace("\\", "/"):
                counts[name] = counts.get(name, 0) + 1
            return originals[name](self, *args, **kwargs)

        return wrapper

    try:
        for name in READ_BACKS:
            setattr(torch.Tensor, name, counted(name))
        yield counts
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)


@pytest.mark.parametrize(
    ("method", "serial"),
    [("pipelined", False), ("al", False), ("delayed", False), ("penalty", True)],
    ids=["pipelined", "al", "delayed", "serial-step"],
)
def test_training_steps_read_nothing_back(tmp_path, method, serial):
    config = digits_config(tmp_path, f"layerpar.method={method}", "train.dtype=float32", stages=3)
    trainer = LayerParallelTrainer(config)
    runner = trainer.runner
    program = runner.program(serial)
    counts: dict[str, int] = {}
    with counting_read_backs(counts):
        for step in range(6):
            runner.begin(step, 0.01, serial=serial, final=step == 5 and not serial)
            runner.run(program)
            metrics = runner.take_metrics()
    assert counts == {}, f"host read-backs inside training steps: {counts}"
    assert any(isinstance(v, torch.Tensor) for v in metrics.values())  # metrics were recorded, as tensors
    # The loop's logging is where they are read: one conversion per value.
    with counting_read_backs(counts):
        runner.gather([metrics])
    assert counts.get("__float__", 0) >= 1
