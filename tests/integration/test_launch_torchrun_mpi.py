"""End-to-end through real launchers: torchrun and mpirun (+ mpi4py rendezvous), gloo on CPU.

Each trains a tiny model for a few dozen steps and checks the run folder; the torchrun run is
also compared with the in-process reference in float64.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from layerpar.config import RunConfig, load_config
from layerpar.launchers import launch_training
from layerpar.launchers.cluster import load_cluster_config
from layerpar.parallel.trainer import LayerParallelTrainer

ROOT = Path(__file__).resolve().parents[2]


def tiny_config(out: Path, name: str) -> RunConfig:
    return load_config(ROOT / "configs" / "digits_tiny.yaml", [
        "data.train_limit=320", "train.batch_size=32", "train.epochs=1", "train.dtype=float64",
        "train.progress=false", f"train.out_dir={out}", f"train.run_name={name}",
        "layerpar.warmup_epochs=0.3", "layerpar.serial_final_epochs=0.2",
    ])


def check_run_folder(run_dir: Path, record: dict) -> None:
    assert (run_dir / "model.pt").is_file()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert 0.0 <= summary["final_test_acc"] <= 1.0
    assert summary["final_test_acc"] == record["final_test_acc"]
    assert summary["steps"] == 10


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_torchrun_matches_in_process_reference(tmp_path: Path) -> None:
    record = launch_training(tiny_config(tmp_path, "torchrun"), load_cluster_config(ROOT / "cluster_configs/torchrun.yaml"))
    assert record is not None
    check_run_folder(tmp_path / "torchrun", record)
    reference = LayerParallelTrainer(tiny_config(tmp_path, "reference")).fit()
    ours = torch.load(tmp_path / "torchrun" / "model.pt", weights_only=True)["model"]
    theirs = torch.load(tmp_path / "reference" / "model.pt", weights_only=True)["model"]
    assert ours.keys() == theirs.keys()
    for key in ours:
        torch.testing.assert_close(ours[key], theirs[key], rtol=1e-12, atol=1e-12)
    assert record["final_test_acc"] == reference.final_test_acc


@pytest.mark.mpi
@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.skipif(shutil.which("mpirun") is None, reason="Open MPI not installed (CI installs it)")
def test_mpirun_trains_end_to_end(tmp_path: Path) -> None:
    record = launch_training(tiny_config(tmp_path, "mpi"), load_cluster_config(ROOT / "cluster_configs/mpi.yaml"))
    assert record is not None
    check_run_folder(tmp_path / "mpi", record)
