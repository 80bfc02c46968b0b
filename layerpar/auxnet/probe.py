"""Boundary shapes of a partitioned backbone, from one forward pass on a sample."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


@torch.no_grad()
def boundary_shapes(
    stages: Sequence[nn.Module], sample: torch.Tensor, cond: torch.Tensor | None = None
) -> list[tuple[int, ...]]:
    """Per-sample shape of every stage output except the last (the K−1 boundaries)."""
    was_training = [stage.training for stage in stages]
    shapes = []
    x = sample
    try:
        for stage in stages:
            stage.eval()
            x = stage(x, cond) if cond is not None else stage(x)
            shapes.append(tuple(x.shape[1:]))
    finally:
        for stage, mode in zip(stages, was_training):
            stage.train(mode)
    return shapes[:-1]
