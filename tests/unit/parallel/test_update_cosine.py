"""The signal diagnostic: at every evaluation, per module, the cosine between the gradient one
parallel step of an AuxNet method applies and serial backprop's gradient of the same batch at
the same weights.  With an oracle AuxNet the AL step *is* backprop (cosine 1); the diagnostic
changes no weight."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from layerpar.auxnet import OracleAux
from layerpar.parallel.loop import diagnose
from layerpar.parallel.trainer import LayerParallelTrainer
from tests.helpers.oracle import digits_config


@pytest.mark.parametrize("stages", [2, 4])
def test_an_oracle_auxnet_gives_cosine_one(tmp_path, stages):
    config = digits_config(tmp_path, "layerpar.method=al", stages=stages)
    trainer = LayerParallelTrainer(config, oracle_factory=lambda s: OracleAux(s.partition.stages, F.cross_entropy))
    before = [p.detach().clone() for p in trainer.setup.model.parameters()]
    scores = diagnose(trainer.runner, trainer.data.schedule)
    cosines = [scores[f"update_cosine/{k}"] for k in range(stages)]
    assert all(abs(c - 1.0) < 1e-10 for c in cosines), cosines
    after = list(trainer.setup.model.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))  # no update
    assert trainer.runner.step == 0


def test_a_real_auxnet_reports_a_cosine_per_module_and_the_stale_methods_none(tmp_path):
    trainer = LayerParallelTrainer(digits_config(tmp_path, "layerpar.method=penalty", stages=3))
    scores = diagnose(trainer.runner, trainer.data.schedule)
    cosines = [scores[f"update_cosine/{k}"] for k in range(3)]
    assert all(math.isfinite(c) and -1.0 <= c <= 1.0 for c in cosines)
    # The last module's loss is the task loss on a predicted input: it points near backprop.
    assert cosines[-1] > 0
    delayed = LayerParallelTrainer(digits_config(tmp_path / "d", "layerpar.method=delayed", stages=3))
    assert not any(k.startswith("update_cosine/") for k in diagnose(delayed.runner, delayed.data.schedule))
