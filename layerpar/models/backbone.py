"""A backbone is a flat sequence of blocks that can be cut between any two of them.

Blocks take the activation and, if they declare ``conditioned = True``, a conditioning tensor
(for diffusion denoisers: a timestep/class embedding).  Every block of a ResNet ignores it, so a
stage is the same object for classifiers and denoisers: ``stage(x, cond)``.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn


def is_conditioned(block: nn.Module) -> bool:
    """True when ``block`` takes ``(x, cond)`` rather than ``x``."""
    return bool(getattr(block, "conditioned", False))


class Backbone(nn.Module):
    """An ordered run of blocks; a whole network, or one module (stage) of it."""

    def __init__(self, blocks: Iterable[nn.Module]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)

    def __len__(self) -> int:
        return len(self.blocks)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        for block in self.blocks:
            x = block(x, cond) if is_conditioned(block) else block(x)
        return x

    def slice(self, start: int, stop: int) -> Backbone:
        """The blocks ``[start, stop)`` as a new Backbone sharing the same parameters."""
        return Backbone(self.blocks[start:stop])


def as_backbone(model: nn.Module) -> Backbone:
    """Accept a Backbone or a user's ``nn.Sequential`` of blocks."""
    if isinstance(model, Backbone):
        return model
    if isinstance(model, nn.Sequential):
        return Backbone(list(model))
    from layerpar.errors import PartitionError

    raise PartitionError(
        f"cannot split a {type(model).__name__}: pass a layerpar Backbone or an nn.Sequential "
        "whose children are the blocks to cut between"
    )
