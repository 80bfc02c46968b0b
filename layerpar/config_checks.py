"""The cross-field checks of a ``RunConfig``, run when one is built (``RunConfig.__post_init__``).

A check raises ``ConfigError`` naming the field, the value and what would be valid.  Kept apart
from the schema (``config.py``) so each file stays one concept; ``config`` is typed ``Any``
because importing ``RunConfig`` here would make the two modules import each other.
"""

from __future__ import annotations

import math
from typing import Any

from layerpar.errors import ConfigError

DENOISER_MODELS = ("mlp_denoiser", "dit_tiny", "dit_s", "dit")
"""Backbones that take (x_t, conditioning) and predict ε or a velocity."""


def check_run_config(config: Any) -> None:
    """Every check of a whole run config."""
    _check_positive("parallel.stages", config.parallel.stages)
    _check_positive("parallel.replicas", config.parallel.replicas)
    _check_positive("train.batch_size", config.train.batch_size)
    if config.layerpar.beta <= 0:
        raise ConfigError(f"layerpar.beta must be > 0, got {config.layerpar.beta}")
    if config.layerpar.serial_every < 0 or config.layerpar.serial_every == 1:
        raise ConfigError(
            f"layerpar.serial_every must be 0 (off) or >= 2 (1 would make every step serial: use "
            f"train.mode=serial), got {config.layerpar.serial_every}"
        )
    if config.layerpar.beta_final is not None and config.layerpar.beta_final <= 0:
        raise ConfigError(
            f"layerpar.beta_final must be > 0 (or null for a constant beta), got {config.layerpar.beta_final}"
        )
    if config.train.batch_size % config.parallel.replicas:
        raise ConfigError(
            f"train.batch_size={config.train.batch_size} is not divisible by "
            f"parallel.replicas={config.parallel.replicas}: every replica needs an equal shard"
        )
    if config.layerpar.accumulate is not None:
        _check_positive("layerpar.accumulate", config.layerpar.accumulate)
    _check_values(config)


def _check_positive(name: str, value: int) -> None:
    if value < 1:
        raise ConfigError(f"{name} must be >= 1, got {value}")


def _check_number(
    name: str,
    value: float | None,
    *,
    above: float | None = None,
    at_least: float | None = None,
    below: float | None = None,
) -> None:
    """A finite number in range (None passes: the field is optional)."""
    if value is None:
        return
    if not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {value}")
    if above is not None and not value > above:
        raise ConfigError(f"{name} must be > {above:g}, got {value:g}")
    if at_least is not None and not value >= at_least:
        raise ConfigError(f"{name} must be >= {at_least:g}, got {value:g}")
    if below is not None and not value < below:
        raise ConfigError(f"{name} must be < {below:g}, got {value:g}")


def _check_values(config: Any) -> None:
    """Every value in its valid range, at load time: a bad value fails before any work is done."""
    m, d, o, a, lp, p, t = (
        config.model,
        config.data,
        config.optim,
        config.aux,
        config.layerpar,
        config.parallel,
        config.train,
    )
    for name, count in (
        ("model.width", m.width),
        ("model.hidden", m.hidden),
        ("model.depth", m.depth),
        ("aux.width", a.width),
        ("aux.stem_stride", a.stem_stride),
        ("train.eval_every", t.eval_every),
        ("train.log_every", t.log_every),
        ("parallel.threads_per_worker", p.threads_per_worker),
    ):
        _check_positive(name, count)
    for name, optional in (
        ("data.train_limit", d.train_limit),
        ("data.test_limit", d.test_limit),
        ("train.eval_every_steps", t.eval_every_steps),
        ("train.stop_at_step", t.stop_at_step),
        ("checkpoint.every_steps", config.checkpoint.every_steps),
    ):
        if optional is not None:
            _check_positive(name, optional)
    _check_number("data.crop_pad", d.crop_pad, at_least=0)
    _check_number("aux.blocks_per_stage", a.blocks_per_stage, at_least=0)
    _check_number("optim.lr", o.lr, above=0)
    _check_number("optim.momentum", o.momentum, at_least=0, below=1)
    _check_number("optim.weight_decay", o.weight_decay, at_least=0)
    _check_number("aux.lr", a.lr, above=0)
    _check_number("layerpar.beta", lp.beta, above=0)
    _check_number("layerpar.gamma", lp.gamma, at_least=0)
    _check_number("layerpar.warmup_epochs", lp.warmup_epochs, at_least=0)
    _check_number("layerpar.serial_final_epochs", lp.serial_final_epochs, at_least=0)
    _check_number("layerpar.al_step_clip", lp.al_step_clip, above=0)
    _check_number("layerpar.bn_reestimate_batches", lp.bn_reestimate_batches, at_least=0)
    _check_number("train.epochs", t.epochs, above=0)
    _check_number("parallel.timeout_s", p.timeout_s, above=0)
    _check_number("checkpoint.every_min", config.checkpoint.every_min, above=0)
    _check_positive("checkpoint.keep", config.checkpoint.keep)
    _check_number("train.check_finite_every", t.check_finite_every, at_least=0)
    _check_diffusion(config)


def _check_diffusion(config: Any) -> None:
    f = config.diffusion
    _check_positive("diffusion.timesteps", f.timesteps)
    _check_positive("diffusion.sample_steps", f.sample_steps)
    _check_positive("diffusion.eval_samples", f.eval_samples)
    _check_number("diffusion.label_dropout", f.label_dropout, at_least=0, below=1)
    _check_number("diffusion.ema_decay", f.ema_decay, above=0, below=1)
    _check_number("diffusion.guidance", f.guidance, at_least=0)
    denoiser = config.model.name in DENOISER_MODELS
    if denoiser and not config.is_diffusion:
        raise ConfigError(
            f"model.name={config.model.name} is a diffusion denoiser: set diffusion.objective to ddpm or flow"
        )
    if config.is_diffusion and not denoiser and config.model.factory is None:
        raise ConfigError(
            f"diffusion.objective={f.objective} trains a denoiser: set model.name to one of "
            f"{', '.join(DENOISER_MODELS)} (got {config.model.name})"
        )
    if config.is_diffusion and (config.data.crop_pad or config.data.flip):
        raise ConfigError(
            "diffusion runs train on the data as they are: set data.crop_pad=0 and data.flip=false"
        )
    if f.objective == "flow" and f.sampler not in ("auto", "euler"):
        raise ConfigError(
            f"diffusion.objective=flow samples with euler: set diffusion.sampler=auto (got {f.sampler})"
        )
    if f.objective == "ddpm" and f.sampler == "euler":
        raise ConfigError("diffusion.sampler=euler is the flow sampler: use ddim or ddpm with objective=ddpm")
