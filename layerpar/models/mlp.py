"""A residual MLP backbone for vector inputs (and, conditioned, for 2-D diffusion)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from layerpar.models.backbone import Backbone


class Flatten(nn.Module):
    """Flatten an image to a vector, then a linear layer to the hidden width."""

    def __init__(self, in_features: int, hidden: int) -> None:
        super().__init__()
        self.fc = nn.Linear(in_features, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(x, 1))


class ResidualMLPBlock(nn.Module):
    """x + W2 · relu(W1 · LayerNorm(x))."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.fc1 = nn.Linear(hidden, 2 * hidden)
        self.fc2 = nn.Linear(2 * hidden, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(F.relu(self.fc1(self.norm(x))))


class LinearHead(nn.Module):
    def __init__(self, hidden: int, out_features: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.fc = nn.Linear(hidden, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.norm(x))


def residual_mlp(in_features: int, num_classes: int, *, hidden: int = 128, depth: int = 8) -> Backbone:
    """Input projection, ``depth`` residual blocks, a linear head."""
    blocks: list[nn.Module] = [Flatten(in_features, hidden)]
    blocks += [ResidualMLPBlock(hidden) for _ in range(depth)]
    blocks.append(LinearHead(hidden, num_classes))
    return Backbone(blocks)
