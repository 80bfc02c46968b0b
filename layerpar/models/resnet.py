"""CIFAR-style ResNets (He et al. 2016, §4.2) as flat block sequences: stem, 3n blocks, head."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from layerpar.models.backbone import Backbone


class Stem(nn.Module):
    """3×3 convolution, BatchNorm, ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class BasicBlock(nn.Module):
    """Two 3×3 convolutions with a shortcut (1×1 projection when the shape changes)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ClassifierHead(nn.Module):
    """Global average pooling and a linear classifier."""

    def __init__(self, channels: int, num_classes: int, pre_activation: bool = False) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(channels) if pre_activation else nn.Identity()
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(self.bn, nn.BatchNorm2d):
            x = F.relu(self.bn(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


RESNET_DEPTHS = (20, 32, 44, 56, 110)


def resnet(depth: int, *, in_channels: int = 3, num_classes: int = 10, width: int = 1) -> Backbone:
    """ResNet-``depth`` for CIFAR-sized inputs; depth = 6n + 2, channels 16/32/64 × width."""
    if (depth - 2) % 6 != 0 or depth < 8:
        from layerpar.errors import ConfigError

        raise ConfigError(f"ResNet depth must be 6n+2 (e.g. {RESNET_DEPTHS}), got {depth}")
    blocks_per_group = (depth - 2) // 6
    widths = [16 * width, 32 * width, 64 * width]
    blocks: list[nn.Module] = [Stem(in_channels, widths[0])]
    channels = widths[0]
    for group, out_channels in enumerate(widths):
        for index in range(blocks_per_group):
            stride = 2 if group > 0 and index == 0 else 1
            blocks.append(BasicBlock(channels, out_channels, stride))
            channels = out_channels
    blocks.append(ClassifierHead(channels, num_classes))
    _init_weights(blocks)
    return Backbone(blocks)


def _init_weights(blocks: list[nn.Module]) -> None:
    for block in blocks:
        for module in block.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
