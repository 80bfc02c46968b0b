"""Samplers for trained denoisers: DDPM ancestral, DDIM (η = 0) and Euler for flow matching.

A sampler only needs ``denoise(x_t, time, labels)``, the network's prediction (ε for DDPM,
velocity ε − x₀ for flow) with time on the model scale; it never sees the model itself, so the
same code samples from an end-to-end network, a layer-parallel pipeline or an analytic oracle.
Every random number comes from the caller's CPU generator, so a seed fixes the samples.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Literal

import torch
from torch import Tensor
from tqdm import tqdm

from layerpar.diffusion.objectives import DDPMObjective, FlowObjective, Objective
from layerpar.diffusion.schedules import MODEL_TIME_SCALE, NoiseSchedule

# (x_t, time (B,) float32 on the model scale, labels (B,) long) -> prediction shaped like x_t
Denoise = Callable[[Tensor, Tensor, Tensor], Tensor]
SamplerMethod = Literal["ddpm", "ddim", "euler"]
SAMPLER_METHODS: dict[str, tuple[str, ...]] = {"ddpm": ("ddpm", "ddim"), "flow": ("euler",)}


def guided(denoise: Denoise, guidance: float, null_label: int | None) -> Denoise:
    """Wrap ``denoise`` with classifier-free guidance: pred = uncond + g·(cond − uncond).

    The conditional and null-label halves go through the network as one concatenated batch
    (one call, twice the batch), which is how CFG is usually run. Guidance 1 is the plain
    conditional model, so ``denoise`` is returned unchanged and no null label is needed.
    """
    if guidance == 1.0:
        return denoise
    if null_label is None:
        raise ValueError(f"guidance {guidance} != 1 needs null_label (the unconditional class index)")
    null_index = null_label

    def guided_denoise(x_t: Tensor, time: Tensor, labels: Tensor) -> Tensor:
        null = torch.full_like(labels, null_index)
        both = denoise(torch.cat([x_t, x_t]), torch.cat([time, time]), torch.cat([labels, null]))
        cond, uncond = both.chunk(2)
        return uncond + guidance * (cond - uncond)

    return guided_denoise


def ddim_timesteps(timesteps: int, steps: int) -> list[int]:
    """``steps`` evenly spaced step indices from T−1 down to 0 (both ends included).

    Starting at T−1 matters: x_T is drawn as pure N(0, I), which matches ᾱ_{T−1} ≈ 0 and not an
    intermediate step. A single step uses T−1 alone.
    """
    if not 1 <= steps <= timesteps:
        raise ValueError(f"ddim needs 1 <= steps <= timesteps ({timesteps}), got {steps}")
    if steps == 1:
        return [timesteps - 1]
    grid = torch.linspace(0, timesteps - 1, steps, dtype=torch.float64).round().long()
    return sorted(set(grid.tolist()), reverse=True)


def _check_method(objective: Objective, method: str, steps: int | None) -> None:
    """Reject a method that does not belong to the objective, or a step count it cannot honour."""
    allowed = SAMPLER_METHODS[objective.name]
    if method not in allowed:
        raise ValueError(
            f"sampler {method!r} does not apply to the {objective.name} objective: use {' or '.join(allowed)}"
        )
    if method == "ddpm" and isinstance(objective, DDPMObjective):
        total = objective.schedule.timesteps
        if steps is not None and steps != total:
            raise ValueError(
                f"ddpm ancestral sampling runs all {total} steps; got steps={steps} "
                "(pass steps=None or the schedule's timesteps, or use method='ddim' for fewer steps)"
            )
    elif steps is None or steps < 1:
        raise ValueError(f"{method} needs steps >= 1, got {steps}")


def _progress(items: Sequence[int], enabled: bool, method: str) -> Iterable[int]:
    """The step sequence, wrapped in a tqdm bar when asked for."""
    return tqdm(items, desc=f"sampling ({method})", disable=not enabled, leave=False)


def _predict_x0(x_t: Tensor, eps: Tensor, alpha_bar: float, clip: float | None) -> Tensor:
    """x̂₀ = (x_t − √(1−ᾱ)·ε̂)/√ᾱ, clamped to [−clip, clip] when ``clip`` is set."""
    x0 = (x_t - math.sqrt(1.0 - alpha_bar) * eps) / math.sqrt(alpha_bar)
    return x0 if clip is None else x0.clamp(-clip, clip)


def _ddpm_loop(
    denoise: Denoise,
    schedule: NoiseSchedule,
    x: Tensor,
    labels: Tensor,
    generator: torch.Generator,
    clip: float | None,
    progress: bool,
) -> Tensor:
    """Ancestral sampling over all T steps with the fixed "small" variance β̃_t.

    Each step draws x_{t−1} ~ N(μ̃_t(x_t, x̂₀), β̃_t) with the posterior of q(x_{t−1} | x_t, x₀),
    μ̃_t = β_t√ᾱ_{t−1}/(1−ᾱ_t)·x̂₀ + (1−ᾱ_{t−1})√α_t/(1−ᾱ_t)·x_t, β̃_t = β_t(1−ᾱ_{t−1})/(1−ᾱ_t).
    Going through x̂₀ (rather than the ε form of the mean) is what lets ``clip`` act.
    """
    alphas_bar = schedule.alphas_bar.tolist()
    betas = schedule.betas.tolist()
    for step in _progress(range(schedule.timesteps - 1, -1, -1), progress, "ddpm"):
        alpha_bar, beta = alphas_bar[step], betas[step]
        alpha_bar_prev = alphas_bar[step - 1] if step > 0 else 1.0
        time = torch.full((x.shape[0],), float(step), device=x.device)
        eps = denoise(x, time, labels).to(x.dtype)
        x0 = _predict_x0(x, eps, alpha_bar, clip)
        coef_x0 = beta * math.sqrt(alpha_bar_prev) / (1.0 - alpha_bar)
        coef_xt = (1.0 - alpha_bar_prev) * math.sqrt(1.0 - beta) / (1.0 - alpha_bar)
        x = coef_x0 * x0 + coef_xt * x
        if step > 0:
            variance = beta * (1.0 - alpha_bar_prev) / (1.0 - alpha_bar)
            x = x + math.sqrt(variance) * _normal_like(x, generator)
    return x


def _ddim_loop(
    denoise: Denoise,
    schedule: NoiseSchedule,
    x: Tensor,
    labels: Tensor,
    steps: int,
    clip: float | None,
    progress: bool,
) -> Tensor:
    """Deterministic DDIM (η = 0): x_{prev} = √ᾱ_prev·x̂₀ + √(1−ᾱ_prev)·ε̂, last step to ᾱ = 1.

    When x̂₀ is clipped, ε̂ is recomputed from the clipped x̂₀ (as diffusers does) so that the
    update stays on the line through x_t.
    """
    alphas_bar = schedule.alphas_bar.tolist()
    sequence = ddim_timesteps(schedule.timesteps, steps)
    for index, step in enumerate(_progress(sequence, progress, "ddim")):
        alpha_bar = alphas_bar[step]
        alpha_bar_prev = alphas_bar[sequence[index + 1]] if index + 1 < len(sequence) else 1.0
        time = torch.full((x.shape[0],), float(step), device=x.device)
        eps = denoise(x, time, labels).to(x.dtype)
        x0 = _predict_x0(x, eps, alpha_bar, clip)
        if clip is not None:
            eps = (x - math.sqrt(alpha_bar) * x0) / math.sqrt(1.0 - alpha_bar)
        x = math.sqrt(alpha_bar_prev) * x0 + math.sqrt(1.0 - alpha_bar_prev) * eps
    return x


def _euler_loop(denoise: Denoise, x: Tensor, labels: Tensor, steps: int, progress: bool) -> Tensor:
    """Euler integration of dx/dt = v(x, t) from t = 1 (noise) to t = 0 (data) in ``steps`` steps."""
    grid = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64).tolist()
    for index in _progress(range(steps), progress, "euler"):
        t, t_next = grid[index], grid[index + 1]
        time = torch.full((x.shape[0],), t * MODEL_TIME_SCALE, device=x.device)
        velocity = denoise(x, time, labels).to(x.dtype)
        x = x + (t_next - t) * velocity
    return x


def _normal_like(x: Tensor, generator: torch.Generator) -> Tensor:
    """N(0, I) like ``x``, drawn in float32 on the CPU so that every device and dtype gets the same draw."""
    return torch.randn(x.shape, generator=generator, dtype=torch.float32).to(device=x.device, dtype=x.dtype)


def sample(
    denoise: Denoise,
    objective: Objective,
    shape: tuple[int, ...],
    labels: Tensor,
    *,
    method: SamplerMethod,
    steps: int | None = None,
    guidance: float = 1.0,
    null_label: int | None = None,
    generator: torch.Generator,
    clip: float | None = None,
    dtype: torch.dtype = torch.float32,
    progress: bool = False,
) -> Tensor:
    """Draw ``len(labels)`` samples of ``shape`` on ``labels.device``; returns (n, *shape).

    * DDPM objective: ``method="ddpm"`` is ancestral sampling over all T steps (``steps`` must be
      None or T: a different count raises instead of being silently ignored); ``method="ddim"`` is
      deterministic DDIM over ``steps`` evenly spaced steps. "euler" raises.
    * Flow objective: ``method="euler"`` integrates from t = 1 to 0 in ``steps`` steps; "ddpm" and
      "ddim" raise. ``clip`` here clamps the final sample only (there is no per-step x̂₀ update).
    * ``guidance`` != 1 applies classifier-free guidance and needs ``null_label``.
    * ``clip`` clamps the predicted x̂₀ to [−clip, clip] at every DDPM/DDIM step (1.0 for
      images in [−1, 1]; None for standardised 2-D data).

    The network gets time as float32 whatever ``dtype`` is, so step indices up to 999 stay exact.
    """
    _check_method(objective, method, steps)
    if labels.dim() != 1:
        raise ValueError(
            f"labels must be a 1-D tensor (one label per sample), got shape {tuple(labels.shape)}"
        )
    model = guided(denoise, guidance, null_label)
    noise = torch.randn((labels.shape[0], *shape), generator=generator, dtype=torch.float32)
    x = noise.to(device=labels.device, dtype=dtype)
    with torch.no_grad():
        if isinstance(objective, FlowObjective):
            assert steps is not None  # checked by _check_method
            x = _euler_loop(model, x, labels, steps, progress)
            return x if clip is None else x.clamp(-clip, clip)
        if method == "ddpm":
            return _ddpm_loop(model, objective.schedule, x, labels, generator, clip, progress)
        assert steps is not None  # checked by _check_method
        return _ddim_loop(model, objective.schedule, x, labels, steps, clip, progress)
