"""A denoiser's pipeline stage (``CondStage``): it must survive torch.distributed.pipelining's
shape inference, which runs a later stage once on uninitialised (``torch.empty``) buffers, and
leave real conditioning untouched."""

from __future__ import annotations

import torch

from layerpar.bench.pipeline_stages import CondStage
from layerpar.models.dit import dit


def _second_stage() -> tuple[CondStage, torch.Tensor]:
    torch.manual_seed(0)
    model = dit(in_channels=1, image_size=8, num_classes=10, hidden=16, depth=2, heads=2, patch=4)
    h = model.slice(0, 1)(torch.randn(3, 1, 8, 8), torch.tensor([[0.5, 3.0]] * 3))
    return CondStage(model.slice(1, len(model)), last=True), h


def test_a_garbage_class_index_does_not_raise() -> None:
    stage, h = _second_stage()
    garbage = torch.tensor([[0.1, 1e9], [0.2, -7.0], [0.3, float("nan")]])
    assert stage(h, garbage).shape == (3, 1, 8, 8)


def test_real_conditioning_is_passed_through_unchanged() -> None:
    stage, h = _second_stage()
    cond = torch.tensor([[0.1, 0.0], [0.5, 9.0], [0.9, 10.0]])  # class 10 is the null class
    assert torch.equal(stage(h, cond), stage.module(h, cond))
