"""mpirun end to end: ranks from ``mpirun -np 2``, rendezvous over mpi4py, tensors over gloo."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

from layerpar.config import RunConfig, load_config, replace
from layerpar.errors import WorkerError
from layerpar.launchers import launch_training, load_cluster_config

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "cluster_configs" / "mpi.yaml"
pytestmark = [
    pytest.mark.mpi,
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("mpirun") is None, reason="Open MPI not installed (apt-get install openmpi-bin)"),
    pytest.mark.skipif(importlib.util.find_spec("mpi4py") is None, reason="mpi4py not installed"),
]


def tiny_config(out: Path, name: str, method: str = "pipelined") -> RunConfig:
    return load_config(None, [f"layerpar.method={method}",
        "data.dataset=digits", "model.name=resnet20", "data.train_limit=256", "train.batch_size=32",
        "train.epochs=1", "parallel.stages=2", "parallel.balance=blocks",
        "train.progress=false", "parallel.timeout_s=60", f"train.out_dir={out}", f"train.run_name={name}",
    ])


@pytest.mark.timeout(180)
@pytest.mark.parametrize("method", ["pipelined", "al"])
def test_mpirun_trains_end_to_end(tmp_path: Path, monkeypatch, method: str) -> None:
    # A relative out_dir and no run_name: the launcher pins one absolute, timestamped folder.
    monkeypatch.chdir(tmp_path)
    config = tiny_config(Path("runs"), "x", method)
    config = replace(config, train={"run_name": None})
    record = launch_training(config, load_cluster_config(CLUSTER))
    (summary_path,) = (tmp_path / "runs").glob("*/summary.json")
    summary = json.loads(summary_path.read_text())
    assert isinstance(summary["final_test_acc"], float) and 0.0 <= summary["final_test_acc"] <= 1.0
    assert summary["method"] == method
    assert record is not None and record["final_test_acc"] == summary["final_test_acc"]
    assert (summary_path.parent / "model.pt").is_file()
    assert len(list(summary_path.parent.glob("checkpoint/step-*/rank*.pt"))) == 2


@pytest.mark.timeout(180)
def test_mpirun_worker_failure_names_the_rank(tmp_path: Path) -> None:
    with pytest.raises(WorkerError) as caught:
        # The launcher itself: launch_training would refuse this resume before starting workers.
        from layerpar.launchers.mpi import launch_mpi

        launch_mpi(tiny_config(tmp_path, "never-ran"), load_cluster_config(CLUSTER), resume=True)
    error = caught.value
    assert error.rank in (0, 1)
    assert "nothing to resume" in error.message and "Traceback" in error.message
