"""``layerpar export``: the serially assembled backbone of a run as a plain ``state_dict``.

    layerpar export runs/my-run --out my-run.pt      # newest complete checkpoint set
    model.load_state_dict(torch.load("my-run.pt", weights_only=True))  # the config's backbone

A run folder is assembled from its newest complete checkpoint set (so a run that died still
exports its last checkpoint); a ``model.pt`` file is unwrapped as it is.
"""

from __future__ import annotations

from pathlib import Path

import torch

from layerpar.checkpoint import load_checkpoint, save_atomic
from layerpar.errors import CheckpointError
from layerpar.parallel.checkpoints import latest_set, load_shard
from layerpar.parallel.session import merge_stage_states


def assembled_state(source: str | Path) -> tuple[dict[str, torch.Tensor], str]:
    """(the whole backbone's state_dict, where it came from)."""
    source = Path(source)
    if source.is_file():
        return load_checkpoint(source)["model"], str(source)
    checkpoint = latest_set(source / "checkpoint")
    if checkpoint is None:
        if (source / "model.pt").is_file():
            return load_checkpoint(source / "model.pt")["model"], str(source / "model.pt")
        raise CheckpointError(
            f"{source} holds no complete checkpoint set and no model.pt: pass a run folder (runs/<run>) "
            "or a model.pt"
        )
    shards = [load_shard(checkpoint, int(rank)) for rank in checkpoint.manifest["shards"]]
    first_replica = sorted((s for s in shards if s["replica"] == 0), key=lambda s: s["stage"])
    bounds = tuple(checkpoint.manifest["identity"]["partition.bounds"])
    return merge_stage_states([s["module"] for s in first_replica], bounds), f"{checkpoint.path}"


def export_model(source: str | Path, out: str | Path) -> tuple[Path, str]:
    """Write the assembled backbone's state_dict to ``out`` (atomically)."""
    state, origin = assembled_state(source)
    return save_atomic(state, out), origin
