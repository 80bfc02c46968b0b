"""A time-conditioned residual MLP denoiser for low-dimensional data (2-D toy distributions).

As tiny-diffusion's MLP (tanelp/tiny-diffusion), except that the conditioning enters *every*
residual block (FiLM from ``c = t_emb + y_emb``) rather than only the input, so each module of a
split model is conditioned by itself (research note ``diffusion.md`` §2.2, §5.1).  Each residual
block starts as the identity (zero FiLM and zero output weight), as DiT's blocks do.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from layerpar.errors import ConfigError
from layerpar.models.backbone import Backbone
from layerpar.models.conditioning import ConditionEmbedder


class InputProjection(nn.Module):
    """Flatten each sample, add sinusoidal features of every coordinate, map linearly to the
    hidden width.

    A plain linear map of a 2-D point leaves the MLP to build the data's sharp edges (the
    checkerboard's squares) out of smooth features; tiny-diffusion embeds each coordinate
    sinusoidally at scale 25 for that reason.  Here ``frequencies`` geometric frequencies from 1
    to ``max_frequency`` (cycles over a unit of the standardised data) per coordinate."""

    def __init__(
        self, features: int, hidden: int, frequencies: int = 16, max_frequency: float = 25.0
    ) -> None:
        super().__init__()
        self.register_buffer(
            "frequencies", torch.logspace(0.0, math.log10(max_frequency), frequencies), persistent=False
        )
        self.fc = nn.Linear(features * (1 + 2 * frequencies), hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(x, 1)
        frequencies: torch.Tensor = self.frequencies  # type: ignore[assignment]  # a buffer
        angles = 2 * math.pi * x.unsqueeze(-1) * frequencies.to(x.dtype)
        waves = torch.cat([angles.sin(), angles.cos()], dim=-1).flatten(1)
        return self.fc(torch.cat([x, waves], dim=1))


class FiLMResidualBlock(nn.Module):
    """``x + W2 · GELU(W1 · (LayerNorm(x) · (1 + scale) + shift))``, ``(scale, shift)`` from ``c``.

    The FiLM projection and ``W2`` start at zero, so the block starts as the identity (and the
    gradient reaches ``W1`` and the FiLM from the second step on, as with adaLN-Zero)."""

    conditioned = True

    def __init__(self, hidden: int, expansion: int = 2) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.film = nn.Linear(hidden, 2 * hidden)
        self.fc1 = nn.Linear(hidden, expansion * hidden)
        self.fc2 = nn.Linear(expansion * hidden, hidden)
        for layer in (self.film, self.fc2):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        scale, shift = self.film(F.silu(c)).chunk(2, dim=1)
        return x + self.fc2(F.gelu(self.fc1(self.norm(x) * (1 + scale) + shift)))


class OutputHead(nn.Module):
    """LayerNorm, a linear map back to the data's features, reshaped to the data's shape.

    Not conditioned: every residual block already is, and the head of tiny-diffusion is a plain
    linear layer."""

    def __init__(self, hidden: int, data_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.data_shape = data_shape
        self.norm = nn.LayerNorm(hidden)
        self.fc = nn.Linear(hidden, _numel(data_shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.norm(x)).reshape(x.shape[0], *self.data_shape)


def _numel(shape: tuple[int, ...]) -> int:
    count = 1
    for size in shape:
        count *= size
    return count


def denoiser_mlp(
    *,
    features: int,
    hidden: int,
    depth: int,
    num_classes: int | None,
    data_shape: tuple[int, ...] | None = None,
) -> Backbone:
    """Input projection, ``depth`` FiLM residual blocks, output head, and a
    :class:`ConditionEmbedder`; call it as ``model(x_t, cond)`` with ``cond`` of shape ``(B, 2)``.

    The output has shape ``(B, *data_shape)``, ``data_shape`` defaulting to ``(features,)``; any
    input with ``features`` elements per sample is accepted (it is flattened)."""
    data_shape = (features,) if data_shape is None else tuple(data_shape)
    if min(features, hidden) < 1 or depth < 0:
        raise ConfigError(
            f"mlp denoiser sizes must be positive (depth >= 0), got features={features}, hidden={hidden}, "
            f"depth={depth}"
        )
    if _numel(data_shape) != features:
        raise ConfigError(
            f"mlp denoiser data_shape={data_shape} has {_numel(data_shape)} elements but features="
            f"{features}: pass a shape whose product is features"
        )
    blocks: list[nn.Module] = [InputProjection(features, hidden)]
    blocks += [FiLMResidualBlock(hidden) for _ in range(depth)]
    blocks.append(OutputHead(hidden, data_shape))
    return Backbone(blocks, embedder=ConditionEmbedder(hidden, num_classes))
