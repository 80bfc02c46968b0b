"""``load_denoiser``: a run folder's newest checkpoint set or its model.pt, EMA or live weights,
and clear errors for what is not a denoiser."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from layerpar.config import load_config
from layerpar.errors import CheckpointError, ConfigError
from layerpar.generation import load_denoiser
from layerpar.parallel.trainer import SerialTrainer


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_run_folder_and_model_pt_give_the_same_assembled_denoiser(toy_run: Path) -> None:
    from_folder = load_denoiser(toy_run)
    from_file = load_denoiser(toy_run / "model.pt")
    assert "checkpoint" in from_folder.origin and from_file.origin.endswith("model.pt")
    assert from_folder.ema and from_file.ema
    assert _same_weights(from_folder.model, from_file.model)
    assert from_folder.shape == (2,) and from_folder.num_classes is None and not from_folder.is_image


def test_ema_and_live_weights_differ_and_live_is_what_the_run_ended_with(toy_run: Path) -> None:
    ema, live = load_denoiser(toy_run), load_denoiser(toy_run, ema=False)
    assert not live.ema
    assert not _same_weights(ema.model, live.model)
    saved = torch.load(toy_run / "model.pt", weights_only=True)["model"]
    assert all(torch.equal(saved[k], v) for k, v in live.model.state_dict().items())


def test_digits_dit_is_conditional_on_its_classes(digits_run: Path) -> None:
    loaded = load_denoiser(digits_run)
    assert loaded.is_image and loaded.shape == (1, 8, 8) and loaded.num_classes == 10
    x = torch.zeros(3, 1, 8, 8)
    out = loaded.denoise(x, torch.tensor([0.0, 10.0, 40.0]), torch.tensor([0, 5, 10]))
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_missing_source_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        load_denoiser(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="no complete checkpoint set"):
        load_denoiser(tmp_path)


def test_a_classifier_run_is_refused(tmp_path: Path) -> None:
    config = load_config(
        None,
        [
            "data.dataset=digits",
            "model.name=mlp",
            "model.hidden=8",
            "model.depth=1",
            "data.crop_pad=0",
            "data.train_limit=64",
            "train.epochs=1",
            "train.batch_size=32",
            "train.progress=false",
            f"train.out_dir={tmp_path}",
            "train.run_name=clf",
        ],
    )
    SerialTrainer(config).fit()
    with pytest.raises(ConfigError, match="classifier run"):
        load_denoiser(tmp_path / "clf")
