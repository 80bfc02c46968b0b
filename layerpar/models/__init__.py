"""Backbones written as flat block sequences, so they can be cut between any two blocks."""

from layerpar.models.backbone import Backbone, as_backbone, is_conditioned
from layerpar.models.conditioning import ConditionEmbedder, timestep_embedding
from layerpar.models.denoiser_mlp import denoiser_mlp
from layerpar.models.dit import DIT_PRESETS, dit
from layerpar.models.mlp import residual_mlp
from layerpar.models.registry import MODEL_NAMES, build_model
from layerpar.models.resnet import resnet
from layerpar.models.wideresnet import wide_resnet

__all__ = [
    "DIT_PRESETS",
    "MODEL_NAMES",
    "Backbone",
    "ConditionEmbedder",
    "as_backbone",
    "build_model",
    "denoiser_mlp",
    "dit",
    "is_conditioned",
    "residual_mlp",
    "resnet",
    "timestep_embedding",
    "wide_resnet",
]
