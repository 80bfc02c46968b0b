"""Exact resume: a run stopped mid-way and resumed from its per-worker checkpoints ends with the
same parameters as an uninterrupted run — in one process and across worker processes."""

from __future__ import annotations

from pathlib import Path

import pytest

from layerpar.config import RunConfig, load_config
from layerpar.launchers.local import launch_local
from layerpar.parallel.trainer import LayerParallelTrainer
from tests.helpers.runs import assert_same_models, step_losses

ROOT = Path(__file__).resolve().parents[2]


def _config(out: Path, name: str, *extra: str) -> RunConfig:
    return load_config(ROOT / "configs" / "digits_tiny.yaml", [
        "data.train_limit=320", "train.batch_size=32", "train.epochs=2", "train.dtype=float64",
        "train.progress=false", f"train.out_dir={out}", f"train.run_name={name}",
        "layerpar.warmup_epochs=0.3", "layerpar.serial_final_epochs=0.2", *extra])


STALE_FREE = ("layerpar.warmup_epochs=0", "layerpar.serial_final_epochs=0")
"""The pipelined method runs no serial phases (it is micro-batched)."""


@pytest.mark.parametrize("method", ["al", "penalty", "delayed", "pipelined", "corrected", "serial"])
def test_in_process_resume_is_exact(tmp_path: Path, method: str) -> None:
    """Stopped mid-epoch with micro-batches in flight (pipelined, delayed, corrected: with their
    applied predictions and heads) and resumed: every per-step loss and every final parameter
    equal the uninterrupted run's."""
    micro_batched = method in ("pipelined", "corrected")
    extra = (f"layerpar.method={method}", *(STALE_FREE if micro_batched else ()))
    LayerParallelTrainer(_config(tmp_path, "straight", *extra)).fit()
    stopped = LayerParallelTrainer(_config(tmp_path, "resumed", "train.stop_at_step=7", *extra)).fit()
    assert stopped.final_test_acc is None  # stopped mid-epoch: no evaluation yet
    resumed = LayerParallelTrainer(_config(tmp_path, "resumed", *extra)).fit(resume=True)
    assert_same_models(tmp_path / "straight", tmp_path / "resumed")
    assert step_losses(tmp_path / "straight") == step_losses(tmp_path / "resumed")
    # The summary's time is the whole run's, not the resumed part's.
    assert resumed.train_time_s > stopped.train_time_s


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.parametrize("method", ["al", "pipelined"])
def test_distributed_resume_is_exact(tmp_path: Path, method: str) -> None:
    """K processes stopped and resumed (in-flight messages sent again) = one uninterrupted run."""
    extra = (f"layerpar.method={method}", *(STALE_FREE if method == "pipelined" else ()))
    LayerParallelTrainer(_config(tmp_path, "straight", *extra)).fit()
    launch_local(_config(tmp_path, "resumed", "train.stop_at_step=13", *extra))
    launch_local(_config(tmp_path, "resumed", *extra), resume=True)
    assert_same_models(tmp_path / "straight", tmp_path / "resumed")
    assert step_losses(tmp_path / "straight") == step_losses(tmp_path / "resumed")


def test_resume_without_checkpoint_says_what_is_missing(tmp_path: Path) -> None:
    from layerpar.errors import CheckpointError

    with pytest.raises(CheckpointError, match="nothing to resume"):
        LayerParallelTrainer(_config(tmp_path, "never-ran")).fit(resume=True)
