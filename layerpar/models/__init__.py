"""Backbones written as flat block sequences, so they can be cut between any two blocks."""

from layerpar.models.backbone import Backbone, as_backbone, is_conditioned
from layerpar.models.mlp import residual_mlp
from layerpar.models.registry import MODEL_NAMES, build_model
from layerpar.models.resnet import resnet
from layerpar.models.wideresnet import wide_resnet

__all__ = [
    "MODEL_NAMES",
    "Backbone",
    "as_backbone",
    "build_model",
    "is_conditioned",
    "residual_mlp",
    "resnet",
    "wide_resnet",
]
