"""A backbone is a flat sequence of blocks that can be cut between any two of them.

Blocks take the activation and, if they declare ``conditioned = True``, a conditioning tensor
(for diffusion denoisers: a timestep/class embedding).  Every block of a ResNet ignores it, so a
stage is the same object for classifiers and denoisers: ``stage(x, cond)``.

A denoiser's backbone also holds an ``embedder`` that turns the raw conditioning (``(B, 2)``:
model time, class index; ``models/conditioning.py``) into the embedding its blocks take.  Every
module of a split denoiser carries the embedder (``slice`` shares it; a worker holds its own
replica), because every module's blocks need the embedding of its own micro-batch; the
replicas' gradients are summed over the modules, which is serial backprop's gradient.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

import torch
from torch import nn


def is_conditioned(block: nn.Module) -> bool:
    """True when ``block`` takes ``(x, cond)`` rather than ``x``."""
    return bool(getattr(block, "conditioned", False))


class Backbone(nn.Module):
    """An ordered run of blocks; a whole network, or one module (stage) of it."""

    def __init__(self, blocks: Iterable[nn.Module], embedder: nn.Module | None = None) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.embedder = embedder

    def __len__(self) -> int:
        return len(self.blocks)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        if self.embedder is not None:
            if cond is None:
                raise ValueError("a denoiser backbone needs its conditioning: call it as model(x_t, cond)")
            cond = self.embedder(cond)
        for block in self.blocks:
            x = block(x, cond) if is_conditioned(block) else block(x)
        return x

    def slice(self, start: int, stop: int) -> Backbone:
        """The blocks ``[start, stop)`` as a new Backbone sharing the same parameters (the
        embedder too)."""
        return Backbone(self.blocks[start:stop], self.embedder)

    def with_own_embedder(self) -> Backbone:
        """The same blocks with a private copy of the embedder (a replica for one worker of
        several in one process, which must not share its parameters)."""
        if self.embedder is None:
            return self
        return Backbone(self.blocks, copy.deepcopy(self.embedder))


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
