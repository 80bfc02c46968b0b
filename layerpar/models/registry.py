"""Build a backbone from its config name."""

from __future__ import annotations

import re

from layerpar.errors import ConfigError
from layerpar.models.backbone import Backbone
from layerpar.models.mlp import residual_mlp
from layerpar.models.resnet import RESNET_DEPTHS, resnet
from layerpar.models.wideresnet import wide_resnet

MODEL_NAMES = tuple(f"resnet{d}" for d in RESNET_DEPTHS) + ("wrn16-K", "wrn28-K", "mlp")


def build_model(
    name: str,
    *,
    in_channels: int,
    image_size: int,
    num_classes: int,
    width: int = 1,
    hidden: int = 128,
    depth: int = 8,
) -> Backbone:
    """The backbone called ``name`` for inputs of ``in_channels × image_size²``."""
    if match := re.fullmatch(r"resnet(\d+)", name):
        return resnet(int(match[1]), in_channels=in_channels, num_classes=num_classes, width=width)
    if match := re.fullmatch(r"wrn(\d+)-(\d+)", name):
        return wide_resnet(int(match[1]), int(match[2]), in_channels=in_channels, num_classes=num_classes)
    if name == "mlp":
        features = in_channels * image_size * image_size
        return residual_mlp(features, num_classes, hidden=hidden, depth=depth)
    raise ConfigError(f"unknown model {name!r}; valid: {', '.join(MODEL_NAMES)}")
