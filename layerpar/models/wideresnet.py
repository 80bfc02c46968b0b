"""Wide ResNets (Zagoruyko & Komodakis 2016) as flat block sequences."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from layerpar.errors import ConfigError
from layerpar.models.backbone import Backbone
from layerpar.models.resnet import ClassifierHead, _init_weights


class PlainStem(nn.Module):
    """A single 3×3 convolution (WRN blocks are pre-activation, so no BN/ReLU here)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class PreActBlock(nn.Module):
    """BN-ReLU-conv ×2 with an identity or 1×1 shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Conv2d(in_channels, out_channels, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.bn1(x)))
        out = self.conv2(F.relu(self.bn2(out)))
        return out + self.shortcut(x)


def wide_resnet(depth: int, widen: int, *, in_channels: int = 3, num_classes: int = 10) -> Backbone:
    """WRN-``depth``-``widen``: depth = 6n + 4, channels 16, 16k, 32k, 64k."""
    if (depth - 4) % 6 != 0 or depth < 10:
        raise ConfigError(f"WideResNet depth must be 6n+4 (e.g. 16, 28), got {depth}")
    if widen < 1:
        raise ConfigError(f"WideResNet widen factor must be >= 1, got {widen}")
    blocks_per_group = (depth - 4) // 6
    widths = [16 * widen, 32 * widen, 64 * widen]
    blocks: list[nn.Module] = [PlainStem(in_channels, 16)]
    channels = 16
    for group, out_channels in enumerate(widths):
        for index in range(blocks_per_group):
            stride = 2 if group > 0 and index == 0 else 1
            blocks.append(PreActBlock(channels, out_channels, stride))
            channels = out_channels
    blocks.append(ClassifierHead(channels, num_classes, pre_activation=True))
    _init_weights(blocks)
    return Backbone(blocks)
