"""Noise schedules for DDPM-style diffusion, computed once in float64.

The schedule is the one piece of a diffusion model every process must agree on bit for bit;
building it in float64 from closed forms (never accumulating in the model's dtype) keeps all
workers and all dtypes on the same ᾱ table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal, get_args

import torch
from torch import Tensor

ScheduleKind = Literal["linear", "cosine"]
SCHEDULE_KINDS: tuple[str, ...] = get_args(ScheduleKind)

# The network always sees time on a [0, 1000) scale, whatever the objective: DDPM passes the
# integer step index as a float, flow matching passes t·1000. One scale lets the same time
# embedding (sinusoidal frequencies tuned for ~1000) serve both objectives.
MODEL_TIME_SCALE = 1000.0

_COSINE_OFFSET = 0.008  # s in Nichol & Dhariwal (2021): keeps β_0 from being vanishingly small
_MAX_BETA = 0.999  # their clip: stops β_T → 1 (a singularity at the end of the cosine)
_LINEAR_BETA_START = 1e-4  # Ho et al. (2020), for T = 1000
_LINEAR_BETA_END = 0.02


def linear_betas(timesteps: int) -> Tensor:
    """DDPM's linear β from 1e-4 to 0.02, rescaled for T != 1000 as improved DDPM does.

    The improved-DDPM rule multiplies both ends by 1000/T so that a shorter chain destroys the
    signal as completely as the 1000-step one; β_T = 20/T must stay below 1, hence T > 20.
    """
    scale = 1000.0 / timesteps
    return torch.linspace(
        scale * _LINEAR_BETA_START, scale * _LINEAR_BETA_END, timesteps, dtype=torch.float64
    )


def cosine_betas(timesteps: int, offset: float = _COSINE_OFFSET) -> Tensor:
    """Nichol & Dhariwal's cosine schedule: ᾱ(t) = f(t)/f(0), f(t) = cos²((t/T + s)/(1 + s)·π/2).

    β_t = 1 − ᾱ(t+1)/ᾱ(t), clipped at 0.999, exactly as ``betas_for_alpha_bar`` in their code.
    """
    steps = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
    f = torch.cos((steps + offset) / (1.0 + offset) * math.pi / 2.0) ** 2
    betas = 1.0 - f[1:] / f[:-1]
    return betas.clamp(max=_MAX_BETA)


@dataclass(frozen=True)
class NoiseSchedule:
    """A discrete variance schedule over step indices 0..T−1.

    ``alphas_bar[t]`` = ∏_{i≤t}(1 − β_i) is the signal fraction at step index t, so
    x_t = √ᾱ_t·x₀ + √(1−ᾱ_t)·ε. All tables are float64 CPU tensors of length T; callers cast
    the coefficients they need, which keeps the arithmetic identical across dtypes and devices.
    """

    kind: ScheduleKind = "linear"
    timesteps: int = 1000
    betas: Tensor = field(init=False, repr=False, compare=False)
    alphas: Tensor = field(init=False, repr=False, compare=False)
    alphas_bar: Tensor = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _validate(self.kind, self.timesteps)
        betas = linear_betas(self.timesteps) if self.kind == "linear" else cosine_betas(self.timesteps)
        alphas = 1.0 - betas
        # frozen dataclass: the derived tables are set once here and never change afterwards.
        object.__setattr__(self, "betas", betas)
        object.__setattr__(self, "alphas", alphas)
        object.__setattr__(self, "alphas_bar", torch.cumprod(alphas, dim=0))


def _validate(kind: str, timesteps: int) -> None:
    """Reject schedules that would give β ≥ 1 or an unknown kind, with a message saying why."""
    if kind not in SCHEDULE_KINDS:
        raise ValueError(f"unknown noise schedule {kind!r}: expected one of {', '.join(SCHEDULE_KINDS)}")
    if isinstance(timesteps, bool) or not isinstance(timesteps, int):
        raise ValueError(f"timesteps must be an int, got {timesteps!r}")
    minimum = 21 if kind == "linear" else 1
    if timesteps < minimum:
        why = (
            " (the rescaled linear schedule has β_T = 20/T, which must stay below 1)"
            if kind == "linear"
            else ""
        )
        raise ValueError(f"{kind} schedule needs timesteps >= {minimum}, got {timesteps}{why}")
