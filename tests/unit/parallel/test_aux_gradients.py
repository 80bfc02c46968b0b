"""The AuxNet all-reduce carries exactly this step's boundary-loss gradients.

Regression test: the last module owns no boundary, and once contributed the previous step's
*summed* gradients again (they stayed in ``.grad``), so the AuxNet followed the running sum of
all past gradients.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from layerpar.auxnet import aux_loss
from layerpar.config import load_config
from layerpar.parallel.methods import Phase
from layerpar.parallel.trainer import LayerParallelTrainer

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("serial", [False, True], ids=["parallel", "serial"])
def test_aux_bucket_is_this_steps_gradient(tmp_path: Path, serial: bool) -> None:
    config = load_config(ROOT / "configs" / "digits_tiny.yaml", [
        "parallel.stages=3", "train.dtype=float64", "data.train_limit=256", "train.batch_size=32",
        f"train.out_dir={tmp_path}", "train.progress=false", "layerpar.method=al"])
    trainer = LayerParallelTrainer(config)
    program = trainer.runner.program(serial)
    start_sync = program.index(Phase("aux", "start_sync"))
    for step in range(3):
        trainer.runner.begin(step, 0.01, serial=serial)
        trainer.runner.run(program[:start_sync])
        if step < 2:
            trainer.runner.run(program[start_sync:])
            trainer.runner.take_metrics()
    for worker in trainer.workers:
        params = list(worker.aux.net.parameters())
        expected = [torch.zeros_like(p) for p in params]
        s = worker.state
        if not worker.is_last:
            # The AuxNet has not stepped yet: a fresh forward rebuilds this step's graph.
            out = worker.aux.net(s.x, upto=worker.stage)
            loss = aux_loss(out.states[worker.stage], out.multipliers[worker.stage],
                            s.aux_targets.state, s.aux_targets.multiplier, config.layerpar.gamma)
            grads = torch.autograd.grad(loss, params, allow_unused=True)
            expected = [g if g is not None else torch.zeros_like(p) for g, p in zip(grads, params)]
        got = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        for g, e in zip(got, expected):
            torch.testing.assert_close(g, e, rtol=1e-12, atol=1e-12)
