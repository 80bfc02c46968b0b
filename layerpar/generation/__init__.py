"""Sampling from trained denoisers and scoring the samples (``layerpar sample``).

``load_denoiser`` rebuilds a run's assembled backbone (EMA weights), ``draw_samples`` runs the
run's sampler, ``write_grid``/``write_scatter`` draw them and ``denoiser_metrics`` scores them
(held-out loss; SWD/MMD for 2-D data; the Fréchet distance in layerpar's own classifier's
features and the conditional accuracy for images).
"""

from __future__ import annotations

from layerpar.generation.classifier import FeatureClassifier, feature_classifier
from layerpar.generation.figures import write_grid, write_scatter
from layerpar.generation.load import LoadedDenoiser, load_denoiser
from layerpar.generation.metrics import denoiser_metrics, held_out_loss
from layerpar.generation.sample import SamplerSettings, balanced_labels, draw_samples, sampler_settings

__all__ = [
    "FeatureClassifier",
    "LoadedDenoiser",
    "SamplerSettings",
    "balanced_labels",
    "denoiser_metrics",
    "draw_samples",
    "feature_classifier",
    "held_out_loss",
    "load_denoiser",
    "sampler_settings",
    "write_grid",
    "write_scatter",
]
