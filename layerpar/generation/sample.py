"""Draw samples from a loaded denoiser with the run's sampler settings (or overrides).

The labels of a conditional model cycle through the classes (sample i has class i mod C), so
any count is balanced and a grid with C columns has one class per column.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from layerpar.diffusion import FlowObjective, SamplerMethod, sample
from layerpar.errors import ConfigError
from layerpar.generation.load import LoadedDenoiser


@dataclass(frozen=True)
class SamplerSettings:
    """What a draw uses: the sampler, its steps, and the guidance scale."""

    method: SamplerMethod
    steps: int | None
    guidance: float


def sampler_settings(
    loaded: LoadedDenoiser,
    sampler: str | None = None,
    steps: int | None = None,
    guidance: float | None = None,
) -> SamplerSettings:
    """The run's ``diffusion`` sampler settings, each overridden when given (auto: DDIM for DDPM,
    Euler for flow; DDPM ancestral takes all T steps)."""
    f = loaded.config.diffusion
    method = sampler or f.sampler
    if method == "auto":
        method = "euler" if isinstance(loaded.task.objective, FlowObjective) else "ddim"
    if method not in ("ddpm", "ddim", "euler"):
        raise ConfigError(f"sampler {method!r}: valid samplers are auto, ddpm, ddim, euler")
    count = None if method == "ddpm" else (steps or f.sample_steps)
    if method == "ddpm" and steps not in (None, f.timesteps):
        raise ConfigError(
            f"the ddpm sampler takes all {f.timesteps} steps: drop --steps or pick --sampler ddim"
        )
    scale = f.guidance if guidance is None else guidance
    if loaded.num_classes is None:
        scale = 1.0  # unconditional data: there is nothing to guide towards
    return SamplerSettings(method, count, scale)  # type: ignore[arg-type]


def balanced_labels(loaded: LoadedDenoiser, n: int) -> torch.Tensor:
    """Class i mod C for sample i (the null label for an unconditional model)."""
    if loaded.num_classes is None:
        return torch.full((n,), loaded.task.null_label, dtype=torch.int64)
    return torch.arange(n, dtype=torch.int64) % loaded.num_classes


def draw_samples(
    loaded: LoadedDenoiser,
    n: int,
    *,
    seed: int = 0,
    labels: torch.Tensor | None = None,
    settings: SamplerSettings | None = None,
    batch_size: int = 1000,
    progress: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(n samples in data space — points, or images in [−1, 1] — and their labels).

    Drawn in batches of ``batch_size``, each from its own generator seeded by (seed, batch
    index), so a draw is fixed by (seed, n, batch_size) whatever machine runs it.
    """
    if n < 1:
        raise ConfigError(f"--n {n}: draw at least one sample")
    settings = settings or sampler_settings(loaded)
    labels = balanced_labels(loaded, n) if labels is None else labels
    clip = 1.0 if loaded.is_image else None  # images live in [−1, 1]; 2-D points are unbounded
    parts = []
    for index, start in enumerate(range(0, n, batch_size)):
        generator = torch.Generator().manual_seed(seed * 1_000_003 + index)
        parts.append(
            sample(
                loaded.denoise,
                loaded.task.objective,
                loaded.shape,
                labels[start : start + batch_size],
                method=settings.method,
                steps=settings.steps,
                guidance=settings.guidance,
                null_label=loaded.task.null_label,
                generator=generator,
                clip=clip,
                progress=progress,
            )
        )
    return torch.cat(parts), labels
