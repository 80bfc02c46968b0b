"""The AuxNet of a diffusion denoiser: predicts every boundary's state (and multiplier) from
``(x_t, t, y)``.

Every step draws fresh (x₀, t, ε), so per-sample auxiliary variables cannot be stored: they are
amortised by this network of the noisy input and its conditioning (DESIGN.md §2, Diffusion).  It
has its own small conditioning embedder, so it shares no parameter with the backbone.

* Token boundaries (a DiT's ``(T, D)``): the AuxNet's own patch embedding, then one narrow DiT
  block per boundary (adaLN on its own embedding), a per-token linear adapter to width D.
* Vector boundaries (the residual-MLP denoiser's ``(D,)``): an input projection, then one FiLM
  residual block per boundary, a linear adapter.

Multiplier heads are zero-initialised (training starts as the penalty method), as in
``network.py``.
"""

from __future__ import annotations

import torch
from torch import nn

from layerpar.auxnet.network import AuxNet, AuxOutput, LinearAdapter
from layerpar.models.conditioning import ConditionEmbedder
from layerpar.models.denoiser_mlp import FiLMResidualBlock
from layerpar.models.dit import DiTBlock, PatchEmbed


class ConditionalAuxNet(AuxNet):
    """An AuxNet whose trunk segments take the embedding of ``cond`` too."""

    def __init__(
        self,
        embedder: ConditionEmbedder,
        stem: nn.Module,
        segments: list[nn.Module],
        adapters: list[nn.Module],
        heads: list[nn.Module] | None,
    ) -> None:
        super().__init__(stem, segments, adapters, heads)
        self.embedder = embedder

    def forward(
        self,
        x: torch.Tensor,
        cond: torch.Tensor | None = None,
        upto: int | None = None,
        labels: torch.Tensor | None = None,
    ) -> AuxOutput:
        if cond is None:
            raise ValueError("a denoiser's AuxNet needs the conditioning (time, label) of its batch")
        last = self.num_boundaries - 1 if upto is None else min(upto, self.num_boundaries - 1)
        c = self.embedder(cond)
        features = self.stem(x)
        states: list[torch.Tensor] = []
        multipliers: list[torch.Tensor | None] = []
        for k in range(last + 1):
            features = self.segments[k](features, c)
            states.append(self.adapters[k](features))
            multipliers.append(self.heads[k](features) if self.heads is not None else None)
        return AuxOutput(states, multipliers)


def build_conditional_auxnet(
    input_shape: tuple[int, ...],
    boundary_shapes: list[tuple[int, ...]],
    *,
    num_classes: int | None,
    width: int,
    multiplier_heads: bool,
    heads: int = 4,
) -> ConditionalAuxNet:
    """A conditional AuxNet for a denoiser's inputs of ``input_shape`` and its boundaries."""
    embedder = ConditionEmbedder(width, num_classes)
    segments: list[nn.Module]
    stem: nn.Module
    if all(len(s) == 2 for s in boundary_shapes) and len(input_shape) == 3:
        # The backbone's patch size, read off its token count: the same tokens, narrower.
        patch = input_shape[1] // round(boundary_shapes[0][0] ** 0.5)
        stem = PatchEmbed(input_shape[0], input_shape[1], patch, width)
        segments = [DiTBlock(width, heads) for _ in boundary_shapes]
    elif all(len(s) == 1 for s in boundary_shapes):
        stem = nn.Linear(int(torch.Size(input_shape).numel()), width)
        segments = [FiLMResidualBlock(width) for _ in boundary_shapes]
    else:
        raise ValueError(
            f"no conditional AuxNet for boundaries {boundary_shapes}: a denoiser's boundaries are "
            "tokens (T, D) of a DiT or vectors (D,) of the residual MLP"
        )
    adapters: list[nn.Module] = [LinearAdapter(width, (s[-1],)) for s in boundary_shapes]
    head_list: list[nn.Module] | None = (
        [LinearAdapter(width, (s[-1],), zero_init=True) for s in boundary_shapes]
        if multiplier_heads
        else None
    )
    return ConditionalAuxNet(embedder, stem, segments, adapters, head_list)
