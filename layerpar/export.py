"""``layerpar export``: the serially assembled backbone of a run as a plain ``state_dict``.

    layerpar export runs/my-run --out my-run.pt      # newest complete checkpoint set
    model.load_state_dict(torch.load("my-run.pt", weights_only=True))  # the config's backbone

A run folder is assembled from its newest complete checkpoint set (so a run that died still
exports its last checkpoint); a ``model.pt`` file is unwrapped as it is.  A denoiser's EMA
weights are assembled the same way (``ema=True``; what ``layerpar sample`` draws from).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from layerpar.checkpoint import load_checkpoint, save_atomic
from layerpar.errors import CheckpointError
from layerpar.parallel.checkpoints import latest_set, load_shard
from layerpar.parallel.session import merge_stage_states

State = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Assembled:
    """The whole backbone of a run, as found on disk."""

    model: State
    ema: State | None
    """The EMA weights (a denoiser trained with diffusion.ema_decay), None when there are none."""
    origin: str
    config: dict[str, Any] | None
    """The run config saved with a model.pt; None for a checkpoint set (it lives in config.yaml)."""


def assembled(source: str | Path) -> Assembled:
    """The live and EMA weights of ``source``: a model.pt, or a run folder (its newest complete
    checkpoint set, else its model.pt)."""
    source = Path(source)
    if source.is_file():
        return _unwrap(source)
    checkpoint = latest_set(source / "checkpoint")
    if checkpoint is None:
        if (source / "model.pt").is_file():
            return _unwrap(source / "model.pt")
        raise CheckpointError(
            f"{source} holds no complete checkpoint set and no model.pt: pass a run folder (runs/<run>) "
            "or a model.pt"
        )
    shards = [load_shard(checkpoint, int(rank)) for rank in checkpoint.manifest["shards"]]
    first_replica = sorted((s for s in shards if s["replica"] == 0), key=lambda s: s["stage"])
    bounds = tuple(checkpoint.manifest["identity"]["partition.bounds"])
    model = merge_stage_states([s["module"] for s in first_replica], bounds)
    emas = [_shard_ema(s) for s in first_replica]
    ema = merge_stage_states([e for e in emas if e is not None], bounds) if None not in emas else None
    return Assembled(model, ema, str(checkpoint.path), None)


def assembled_state(source: str | Path, *, ema: bool = False) -> tuple[State, str]:
    """(the whole backbone's state_dict, where it came from); ``ema`` picks the EMA weights."""
    found = assembled(source)
    if not ema:
        return found.model, found.origin
    if found.ema is None:
        raise CheckpointError(
            f"{found.origin} holds no EMA weights (only a denoiser trained with diffusion.ema_decay "
            "set has them): ask for the live weights"
        )
    return found.ema, found.origin


def _unwrap(path: Path) -> Assembled:
    saved = load_checkpoint(path)
    if not isinstance(saved, dict) or "model" not in saved:
        raise CheckpointError(f"{path} is not a layerpar model.pt (expected keys config and model)")
    return Assembled(saved["model"], saved.get("model_ema"), str(path), saved.get("config"))


def _shard_ema(shard: dict[str, Any]) -> State | None:
    """A shard's module state with its EMA shadow parameters in place of the live ones (buffers
    as they are), which is what ``ModuleEMA.state`` puts in model.pt."""
    ema = shard.get("ema")
    if ema is None:
        return None
    shadow = ema["shadow"]
    return {key: shadow.get(key, value) for key, value in shard["module"].items()}


def export_model(source: str | Path, out: str | Path) -> tuple[Path, str]:
    """Write the assembled backbone's state_dict to ``out`` (atomically)."""
    state, origin = assembled_state(source)
    return save_atomic(state, out), origin
