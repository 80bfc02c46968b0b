"""Tiny trained denoisers shared by the generation tests (real runs, a few seconds each).

* ``toy_run``: the residual-MLP denoiser on the checkerboard, layer-parallel K = 2 (pipelined),
  so loading it assembles two modules' checkpoint shards (EMA included).
* ``digits_run``: a small class-conditional DiT on sklearn's 8×8 digits (no download), serial.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from layerpar.config import load_config
from layerpar.parallel.trainer import LayerParallelTrainer, SerialTrainer

ROOT = Path(__file__).resolve().parents[3]
TINY = [
    "train.epochs=1",
    "train.batch_size=64",
    "train.progress=false",
    "diffusion.timesteps=50",
    "diffusion.sample_steps=5",
    "diffusion.eval_samples=200",
]


def _train(out: Path, name: str, preset: str | None, overrides: list[str], serial: bool) -> Path:
    config = load_config(preset, [*TINY, *overrides, f"train.out_dir={out}", f"train.run_name={name}"])
    (SerialTrainer if serial else LayerParallelTrainer)(config).fit()
    return out / name


@pytest.fixture(scope="package")
def toy_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    overrides = ["model.hidden=16", "model.depth=2", "data.train_limit=512", "data.test_limit=400"]
    return _train(
        tmp_path_factory.mktemp("toy"),
        "toy",
        str(ROOT / "configs/diffusion_toy.yaml"),
        overrides,
        serial=False,
    )


@pytest.fixture(scope="package")
def digits_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    overrides = [
        "model.name=dit",
        "model.hidden=16",
        "model.depth=2",
        "data.dataset=digits",
        "data.crop_pad=0",
        "data.train_limit=256",
        "diffusion.objective=ddpm",
        "diffusion.sampler=ddim",
        "aux.width=8",
    ]
    return _train(tmp_path_factory.mktemp("digits"), "digits", None, overrides, serial=True)
