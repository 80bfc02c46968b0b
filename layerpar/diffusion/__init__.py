"""Diffusion and flow-matching objectives, samplers, metrics and 2-D toy data.

Pure torch (+ numpy/scipy for the Fréchet distance). All randomness is drawn from explicit CPU
generators, so every process of a layer-parallel job computes bit-identical noise, times and
samples from the same seed.
"""

from __future__ import annotations

from layerpar.diffusion.metrics import floor, frechet_distance, median_bandwidth, mmd_rbf, sliced_wasserstein
from layerpar.diffusion.objectives import (
    OBJECTIVE_NAMES,
    DDPMObjective,
    FlowObjective,
    Noised,
    Objective,
    draw_labels,
    objective_for,
)
from layerpar.diffusion.samplers import Denoise, SamplerMethod, ddim_timesteps, guided, sample
from layerpar.diffusion.schedules import MODEL_TIME_SCALE, SCHEDULE_KINDS, NoiseSchedule
from layerpar.diffusion.toy_data import TOY_DISTRIBUTIONS, checkerboard, eight_gaussians, toy_split

__all__ = [
    "MODEL_TIME_SCALE",
    "OBJECTIVE_NAMES",
    "SCHEDULE_KINDS",
    "TOY_DISTRIBUTIONS",
    "DDPMObjective",
    "Denoise",
    "FlowObjective",
    "NoiseSchedule",
    "Noised",
    "Objective",
    "SamplerMethod",
    "checkerboard",
    "ddim_timesteps",
    "draw_labels",
    "eight_gaussians",
    "floor",
    "frechet_distance",
    "guided",
    "median_bandwidth",
    "mmd_rbf",
    "objective_for",
    "sample",
    "sliced_wasserstein",
    "toy_split",
]
