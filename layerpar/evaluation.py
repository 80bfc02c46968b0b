"""``layerpar eval``: rebuild a saved backbone and measure its test accuracy."""

from __future__ import annotations

from pathlib import Path

import torch

from layerpar.checkpoint import load_checkpoint
from layerpar.config import RunConfig, from_dict
from layerpar.data import load_dataset
from layerpar.errors import CheckpointError
from layerpar.parallel.evaluate import evaluate_serial
from layerpar.parallel.setup import build_model_for, torch_dtype


def evaluate_checkpoint(path: str | Path, test_limit: int | None = None) -> dict[str, float]:
    """Test loss and accuracy of ``model.pt`` (BatchNorm statistics as saved: re-estimated at the end)."""
    saved = load_checkpoint(path)
    if not isinstance(saved, dict) or "config" not in saved or "model" not in saved:
        raise CheckpointError(f"{path} is not a layerpar model.pt (expected keys config and model)")
    config: RunConfig = from_dict(RunConfig, saved["config"], "checkpoint config")
    model, _, _ = build_model_for(config)
    try:
        model.load_state_dict(saved["model"])
    except RuntimeError as error:
        raise CheckpointError(f"{path} does not fit {config.model.name}: {error}") from error
    dtype = torch_dtype(config.train.dtype)
    model.to(dtype=dtype)
    test = load_dataset(
        config.data.dataset,
        "test",
        cache_dir=config.data.cache_dir,
        limit=test_limit if test_limit is not None else config.data.test_limit,
    )
    return evaluate_serial([model], test, None, device=torch.device("cpu"), dtype=dtype)
