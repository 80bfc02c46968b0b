"""The two training objectives: DDPM ε-prediction and rectified-flow velocity prediction.

Both turn a clean batch x₀ into (x_t, model time, regression target) with randomness drawn
from an explicit CPU generator only. A layer-parallel job runs the same draw on every process;
a CPU generator gives bit-identical values everywhere, whatever device the model lives on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal, cast

import torch
from torch import Tensor

from layerpar.diffusion.schedules import MODEL_TIME_SCALE, NoiseSchedule, ScheduleKind

OBJECTIVE_NAMES: tuple[str, ...] = ("ddpm", "flow")


@dataclass(frozen=True)
class Noised:
    """One noised training batch.

    ``time`` is the (B,) float tensor the network receives (model time, see
    :data:`~layerpar.diffusion.schedules.MODEL_TIME_SCALE`); ``target`` is what the network
    regresses onto (ε for DDPM, ε − x₀ for flow); ``noise`` is the ε that was drawn.
    """

    x_t: Tensor
    time: Tensor
    target: Tensor
    noise: Tensor


def _draw_noise(x0: Tensor, generator: torch.Generator) -> Tensor:
    """ε ~ N(0, I) shaped like x0, drawn in float32 on the CPU and then cast and moved.

    Drawing in a fixed dtype on the CPU makes the same seed give the same ε for a float32,
    bfloat16 or float64 model and for any device.
    """
    noise = torch.randn(x0.shape, generator=generator, dtype=torch.float32)
    return noise.to(device=x0.device, dtype=x0.dtype)


def _per_example(coefficient: Tensor, like: Tensor) -> Tensor:
    """Cast a (B,) float64 coefficient to ``like``'s dtype/device, shaped to broadcast per example."""
    shape = (coefficient.shape[0],) + (1,) * (like.dim() - 1)
    return coefficient.to(device=like.device, dtype=like.dtype).reshape(shape)


@dataclass(frozen=True)
class DDPMObjective:
    """DDPM's L_simple: x_t = √ᾱ_t·x₀ + √(1−ᾱ_t)·ε, target ε, t uniform over {0..T−1} per example."""

    schedule: NoiseSchedule
    name: ClassVar[Literal["ddpm"]] = "ddpm"
    prediction: ClassVar[Literal["eps"]] = "eps"

    def draw(self, x0: Tensor, generator: torch.Generator) -> Noised:
        """Noise ``x0``; draws t (B integers) and then ε (x0.numel() normals) from ``generator``."""
        batch = x0.shape[0]
        steps = torch.randint(0, self.schedule.timesteps, (batch,), generator=generator)
        noise = _draw_noise(x0, generator)
        alpha_bar = self.schedule.alphas_bar[steps]
        signal = _per_example(alpha_bar.sqrt(), x0)
        sigma = _per_example((1.0 - alpha_bar).sqrt(), x0)
        x_t = signal * x0 + sigma * noise
        time = steps.to(device=x0.device, dtype=torch.float32)
        return Noised(x_t=x_t, time=time, target=noise, noise=noise)


@dataclass(frozen=True)
class FlowObjective:
    """Rectified flow / flow matching: x_t = (1−t)·x₀ + t·ε, target ε − x₀, t ~ U(0, 1) per example."""

    name: ClassVar[Literal["flow"]] = "flow"
    prediction: ClassVar[Literal["velocity"]] = "velocity"

    def draw(self, x0: Tensor, generator: torch.Generator) -> Noised:
        """Noise ``x0``; draws t (B uniforms, float64) and then ε from ``generator``."""
        batch = x0.shape[0]
        t = torch.rand(batch, generator=generator, dtype=torch.float64)
        noise = _draw_noise(x0, generator)
        weight = _per_example(t, x0)
        x_t = (1.0 - weight) * x0 + weight * noise
        time = (t * MODEL_TIME_SCALE).to(device=x0.device, dtype=torch.float32)
        return Noised(x_t=x_t, time=time, target=noise - x0, noise=noise)


Objective = DDPMObjective | FlowObjective


def objective_for(name: str, schedule: str = "linear", timesteps: int = 1000) -> Objective:
    """Build an objective by name; ``schedule`` and ``timesteps`` only matter for "ddpm"."""
    if name == "ddpm":
        return DDPMObjective(NoiseSchedule(cast(ScheduleKind, schedule), timesteps))
    if name == "flow":
        return FlowObjective()
    raise ValueError(f"unknown diffusion objective {name!r}: expected one of {', '.join(OBJECTIVE_NAMES)}")


def draw_labels(labels: Tensor, num_classes: int, dropout: float, generator: torch.Generator) -> Tensor:
    """Replace each label by the null label ``num_classes`` with probability ``dropout``.

    This is classifier-free-guidance training: the same network learns the conditional and the
    unconditional model. One uniform per label is always drawn (also for dropout 0), so the
    generator's state after the call does not depend on the dropout rate.
    """
    if not 0.0 <= dropout <= 1.0:
        raise ValueError(f"label dropout must lie in [0, 1], got {dropout}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    drop = torch.rand(labels.shape, generator=generator) < dropout
    null = torch.full_like(labels, num_classes)
    return torch.where(drop.to(labels.device), null, labels)
