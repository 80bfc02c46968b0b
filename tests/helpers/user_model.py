"""A user's own model, data and loss as importable factories (``model.factory``,
``data.factory``, ``train.loss``), so that worker processes started by a launcher can build them."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class ResidualBlock(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(width, width), nn.BatchNorm1d(width), nn.Tanh())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def build(config) -> nn.Sequential:  # type: ignore[no-untyped-def]
    """A residual MLP for 2-D inputs, three classes."""
    width = 16
    return nn.Sequential(nn.Linear(2, width), *[ResidualBlock(width) for _ in range(5)], nn.Linear(width, 3))


def data(config):  # type: ignore[no-untyped-def]
    """Three Gaussian blobs: (train, test) as (inputs, targets) pairs."""
    g = torch.Generator().manual_seed(7)
    y = torch.randint(0, 3, (320,), generator=g)
    centres = torch.tensor([[0.0, 1.5], [1.3, -0.8], [-1.3, -0.8]])
    x = centres[y] + 0.6 * torch.randn(320, 2, generator=g)
    return (x[:256], y[:256]), (x[256:], y[256:])


def loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(output, target, label_smoothing=0.1)
