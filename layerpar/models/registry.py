"""Build a backbone from its config name."""

from __future__ import annotations

import re

from layerpar.errors import ConfigError
from layerpar.models.backbone import Backbone
from layerpar.models.denoiser_mlp import denoiser_mlp
from layerpar.models.dit import DIT_PRESETS, dit
from layerpar.models.mlp import residual_mlp
from layerpar.models.resnet import RESNET_DEPTHS, resnet
from layerpar.models.wideresnet import wide_resnet

#: Classifiers, then the diffusion denoisers (called as ``model(x_t, cond)``; ``dit`` and
#: ``mlp_denoiser`` take their sizes from ``hidden``/``depth``/``heads``/``patch``).
MODEL_NAMES = (
    tuple(f"resnet{d}" for d in RESNET_DEPTHS)
    + ("wrn16-K", "wrn28-K", "mlp")
    + tuple(DIT_PRESETS)
    + ("dit", "mlp_denoiser")
)


def build_model(
    name: str,
    *,
    in_channels: int,
    image_size: int,
    num_classes: int,
    width: int = 1,
    hidden: int = 128,
    depth: int = 8,
    heads: int = 4,
    patch: int = 4,
) -> Backbone:
    """The backbone called ``name`` for inputs of ``in_channels × image_size²``.

    For a denoiser ``num_classes`` 0 means unconditional; otherwise the label ``num_classes`` is
    the null label of classifier-free guidance.  ``mlp_denoiser`` takes ``image_size=1`` for
    vector data (``in_channels`` features, e.g. 2 for 2-D toys; output ``(B, in_channels)``) and
    otherwise returns images of the input's shape."""
    if match := re.fullmatch(r"resnet(\d+)", name):
        return resnet(int(match[1]), in_channels=in_channels, num_classes=num_classes, width=width)
    if match := re.fullmatch(r"wrn(\d+)-(\d+)", name):
        return wide_resnet(int(match[1]), int(match[2]), in_channels=in_channels, num_classes=num_classes)
    if name == "mlp":
        features = in_channels * image_size * image_size
        return residual_mlp(features, num_classes, hidden=hidden, depth=depth)
    classes = num_classes or None
    if name in DIT_PRESETS:
        return dit(in_channels=in_channels, image_size=image_size, num_classes=classes, **DIT_PRESETS[name])
    if name == "dit":
        return dit(
            in_channels=in_channels,
            image_size=image_size,
            num_classes=classes,
            hidden=hidden,
            depth=depth,
            heads=heads,
            patch=patch,
        )
    if name == "mlp_denoiser":
        shape = (in_channels,) if image_size == 1 else (in_channels, image_size, image_size)
        return denoiser_mlp(
            features=in_channels * image_size * image_size,
            hidden=hidden,
            depth=depth,
            num_classes=classes,
            data_shape=shape,
        )
    raise ConfigError(f"unknown model {name!r}; valid: {', '.join(MODEL_NAMES)}")
