"""Pieces of a run shared by the in-process trainer and the distributed worker entry point."""

from __future__ import annotations

import logging
import platform
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from layerpar.config import RunConfig
from layerpar.data import load_dataset
from layerpar.errors import ConfigError
from layerpar.parallel.batches import BatchPlan
from layerpar.parallel.denoising import DenoisingTask, is_toy, load_denoiser_data
from layerpar.parallel.methods import micro_batches
from layerpar.parallel.objective import import_object
from layerpar.parallel.recorder import default_run_name
from layerpar.parallel.schedule import StepSchedule
from layerpar.parallel.user_data import as_data

log = logging.getLogger(__name__)


@dataclass
class RunData:
    train: Any
    """An ArrayDataset (or a user's TensorData): ``images``, ``labels``, ``len()``."""
    test: Any
    plan: BatchPlan
    schedule: StepSchedule
    bn_images: torch.Tensor
    task: DenoisingTask | None = None
    """A denoiser's diffusion task (None for a classifier); ``test`` is then its held-out set."""

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train.images.shape[1:])


def _datasets(config: RunConfig) -> tuple[Any, Any]:
    """The config's named dataset, or what its ``data.factory`` returns."""
    if config.data.factory is None:
        cache = config.data.cache_dir
        train = load_dataset(config.data.dataset, "train", cache_dir=cache, limit=config.data.train_limit)
        test = load_dataset(config.data.dataset, "test", cache_dir=cache, limit=config.data.test_limit)
        return train, test
    factory = import_object(config.data.factory, "data.factory")
    if not callable(factory):
        raise ConfigError(f"data.factory={config.data.factory!r} is not callable")
    made = factory(config)
    if not (isinstance(made, (tuple, list)) and len(made) == 2):
        raise ConfigError(f"data.factory={config.data.factory!r} must return (train, test)")
    return as_data(made[0], "data.factory's train split"), as_data(made[1], "data.factory's test split")


def load_run_data(config: RunConfig, train: Any = None, test: Any = None) -> RunData:
    """The batches and schedule of a run, on the config's data or on ``train``/``test`` given
    directly (the Python API: tensors, a Dataset or an ArrayDataset)."""
    if train is None and config.is_diffusion and is_toy(config.data.dataset):
        train, test = load_denoiser_data(config, None, None)
    elif train is None:
        train, test = _datasets(config)
        if config.is_diffusion:
            train, test = load_denoiser_data(config, train, test)
    else:
        train = as_data(train, "train data")
        test = as_data(test if test is not None else train, "test data")
    task = DenoisingTask(config) if config.is_diffusion else None
    if (config.data.crop_pad > 0 or config.data.flip) and train.images.dim() != 4:
        raise ConfigError(
            f"data.crop_pad/data.flip augment images (N, C, H, W); these inputs are "
            f"{tuple(train.images.shape)}: set data.crop_pad=0 and data.flip=false"
        )
    plan = BatchPlan(
        train,
        config.train.batch_size,
        config.train.seed,
        crop_pad=config.data.crop_pad,
        flip=config.data.flip,
        micro=micro_batches(config),
        noise=task.noise_batch if task is not None else None,
    )
    schedule = StepSchedule.from_config(config, plan.steps_per_epoch)
    # BN re-estimation uses a fixed slice of un-augmented training images (a denoiser has no BN).
    count = min(len(train), config.layerpar.bn_reestimate_batches * config.train.batch_size)
    if task is not None:
        return RunData(train, task.held_out(test), plan, schedule, train.images[:0], task)
    return RunData(train, test, plan, schedule, train.images[:count])


def run_dir_for(config: RunConfig) -> Path:
    return Path(config.train.out_dir) / (config.train.run_name or default_run_name(config))


def pin_run_dir(config: RunConfig) -> RunConfig:
    """The config with an absolute ``out_dir`` and a fixed ``run_name``.

    Without a name every process would derive its own timestamped folder, and processes that
    start in different seconds (or different working directories) would write to different places.
    Launchers pin it once, before any worker starts.
    """
    from layerpar.config import replace

    run_dir = run_dir_for(config).resolve()
    return replace(config, train={"out_dir": str(run_dir.parent), "run_name": run_dir.name})


def check_new_run_dir(run_dir: Path) -> None:
    """Refuse to start a new run in a folder that holds one (it would be overwritten)."""
    held = [name for name in ("checkpoint", "metrics.jsonl", "summary.json") if (run_dir / name).exists()]
    if held:
        raise ConfigError(
            f"run folder {run_dir} already holds a run ({', '.join(held)}): pass --resume to "
            "continue it, or choose another train.run_name (unset, each run gets a timestamped one)"
        )


def check_run_dir(config: RunConfig, resume: bool | str) -> None:
    """Before any worker starts: a new run needs a folder that holds no run; ``--resume``
    needs one with a complete checkpoint set made by the same model, cut, method and layout."""
    from layerpar.parallel.checkpoints import check_resumable, latest_set

    run_dir = run_dir_for(config)
    if not resume:
        check_new_run_dir(run_dir)
        return
    checkpoint = latest_set(run_dir / "checkpoint")
    if checkpoint is None:
        if resume is True:
            from layerpar.errors import CheckpointError

            raise CheckpointError(
                f"nothing to resume in {run_dir}: no complete checkpoint set under "
                f"{run_dir / 'checkpoint'} (check train.out_dir and train.run_name)"
            )
        return
    # The cut is the checkpoint's own (setup.checkpointed_bounds); everything else must match.
    check_resumable(checkpoint, config, tuple(checkpoint.manifest["identity"]["partition.bounds"]))


def write_run_config(run_dir: Path, config: RunConfig) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))


def environment() -> dict[str, Any]:
    """Versions and the git commit, saved with every result."""
    try:
        commit = (
            subprocess.run(
                ["git", "rev-parse", "HEAD"],
                capture_output=True,
                text=True,
                timeout=5,
                cwd=Path(__file__).parent,
            ).stdout.strip()
            or None
        )
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {
        # The command line of the process writing the record (spawned workers inherit the
        # driver's), so a result file says how it was made.
        "command": shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv and sys.argv[0] else None,
        "git_commit": commit,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "host": platform.node(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
