"""The local (spawn) launcher: a worker's exception reaches the driver with its rank."""

from __future__ import annotations

from pathlib import Path

import pytest

from layerpar.config import load_config
from layerpar.errors import WorkerError
from layerpar.launchers import launch_training, load_cluster_config
from layerpar.launchers.local import launch_local

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_local_worker_failure_names_the_rank(tmp_path: Path) -> None:
    config = load_config(None, [
        "data.dataset=digits", "model.name=resnet20", "data.train_limit=256", "train.batch_size=32",
        "parallel.stages=2", "parallel.balance=blocks", "train.progress=false", "parallel.timeout_s=60",
        f"train.out_dir={tmp_path}", "train.run_name=never-ran",
    ])
    # launch_local itself, past the driver's own check (launch_training refuses before spawning).
    with pytest.raises(WorkerError) as caught:
        launch_local(config, resume=True, max_restarts=2)
    error = caught.value
    assert error.rank in (0, 1)
    assert "nothing to resume" in error.message and "Traceback" in error.message
    assert not error.retryable  # raised on purpose: a restart would fail the same way


def test_launch_training_refuses_a_resume_with_nothing_to_resume_before_spawning(tmp_path: Path) -> None:
    from layerpar.errors import CheckpointError

    config = load_config(None, [f"train.out_dir={tmp_path}", "train.run_name=never-ran"])
    with pytest.raises(CheckpointError, match="nothing to resume"):
        launch_training(config, load_cluster_config(ROOT / "cluster_configs" / "local_cpu.yaml"), resume=True)
