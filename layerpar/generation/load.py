"""A trained denoiser, rebuilt from a run folder or a ``model.pt``, ready to sample from.

A layer-parallel run's modules are assembled serially (``export.assembled``): the newest
complete checkpoint set of a run folder, else its ``model.pt``.  The config that builds the
backbone comes with a ``model.pt``; for a checkpoint set it is the run folder's ``config.yaml``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from layerpar.config import RunConfig, from_dict, load_config
from layerpar.errors import CheckpointError, ConfigError
from layerpar.export import assembled
from layerpar.models import Backbone
from layerpar.parallel.denoising import DenoisingTask, data_shape
from layerpar.parallel.setup import build_model_for


@dataclass(frozen=True, eq=False)
class LoadedDenoiser:
    """A denoiser's backbone (in eval mode, float32, CPU), its run config and its task."""

    model: Backbone
    config: RunConfig
    task: DenoisingTask
    origin: str
    """Where the weights came from (a checkpoint set's folder or a model.pt)."""
    ema: bool
    """True when these are the EMA weights."""

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of one sample (2 for 2-D points, (C, H, W) for images)."""
        return data_shape(self.config)[0]

    @property
    def num_classes(self) -> int | None:
        """The classes it is conditioned on (None: unconditional)."""
        return self.task.num_classes

    @property
    def is_image(self) -> bool:
        return len(self.shape) == 3

    def denoise(self, x_t: torch.Tensor, time: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The network's prediction for ``x_t`` at model time ``time`` (what the samplers call)."""
        return self.model(x_t, self.task.conditioning(time.to(x_t.dtype), labels))


def _run_config(source: Path, saved: dict | None) -> RunConfig:
    if saved is not None:
        return from_dict(RunConfig, saved, f"{source}'s saved config")
    folder = source if source.is_dir() else source.parent
    path = folder / "config.yaml"
    if not path.is_file():
        raise CheckpointError(
            f"{folder} has no config.yaml to rebuild the denoiser from: pass the run folder "
            "(runs/<run>) or its model.pt"
        )
    return load_config(path)


def load_denoiser(source: str | Path, *, ema: bool = True) -> LoadedDenoiser:
    """The denoiser of ``source`` (a run folder or a model.pt), EMA weights when it has them and
    ``ema`` is true (the live weights otherwise)."""
    source = Path(source)
    if not source.exists():
        raise CheckpointError(f"{source} does not exist: pass a run folder (runs/<run>) or a model.pt")
    found = assembled(source)
    config = _run_config(source, found.config)
    if not config.is_diffusion:
        raise ConfigError(
            f"{found.origin} is a classifier run (diffusion.objective is none): layerpar sample "
            "draws from denoisers only; use layerpar eval for a classifier"
        )
    model = build_model_for(config)[0]
    use_ema = ema and found.ema is not None
    try:
        model.load_state_dict(found.ema if use_ema and found.ema is not None else found.model)
    except RuntimeError as error:
        raise CheckpointError(f"{found.origin} does not fit {config.model.name}: {error}") from error
    model.to(torch.float32).eval()
    return LoadedDenoiser(model, config, DenoisingTask(config), found.origin, use_ema)
