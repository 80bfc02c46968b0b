"""Ray end to end on a real local Ray: one Ray for this module, reused (not shut down) by the
launcher; a failing rank reaches the driver as WorkerError; actors and placement group are freed."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from layerpar.config import RunConfig, load_config
from layerpar.errors import WorkerError
from layerpar.launchers import launch_training, load_cluster_config

ray = pytest.importorskip("ray")
ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "cluster_configs" / "ray_local.yaml"
pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture(scope="module")
def local_ray():
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if ray.is_initialized():  # another module's Ray: reuse it, leave it to its owner
        yield
        return
    ray.init(num_cpus=2, include_dashboard=False)
    try:
        yield
    finally:
        ray.shutdown()


def tiny_config(out: Path, name: str, method: str = "pipelined") -> RunConfig:
    return load_config(None, [f"layerpar.method={method}",
        "data.dataset=digits", "model.name=resnet20", "data.train_limit=256", "train.batch_size=32",
        "train.epochs=1", "parallel.stages=2", "parallel.balance=blocks",
        "train.progress=false", "parallel.timeout_s=60", f"train.out_dir={out}", f"train.run_name={name}",
    ])


def wait_for_free_cpus(expected: float, timeout_s: float = 20.0) -> float:
    """Ray frees a killed actor's resources asynchronously."""
    deadline = time.monotonic() + timeout_s
    while True:
        free = ray.available_resources().get("CPU", 0.0)
        if free >= expected or time.monotonic() > deadline:
            return free
        time.sleep(0.2)


@pytest.mark.timeout(180)
@pytest.mark.parametrize("method", ["pipelined", "al"])
def test_ray_trains_end_to_end(local_ray, tmp_path: Path, monkeypatch, method: str) -> None:
    # A relative out_dir: the actors' working directory is Ray's, so the launcher pins it absolute.
    monkeypatch.chdir(tmp_path)
    record = launch_training(tiny_config(Path("runs"), "x", method), load_cluster_config(CLUSTER))
    run_dir = tmp_path / "runs" / "x"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert isinstance(summary["final_test_acc"], float) and 0.0 <= summary["final_test_acc"] <= 1.0
    assert summary["method"] == method
    assert record is not None and record["final_test_acc"] == summary["final_test_acc"]
    assert (run_dir / "model.pt").is_file() and len(list(run_dir.glob("checkpoint/step-*/rank*.pt"))) == 2
    assert ray.is_initialized(), "the launcher must not shut down a Ray it did not start"
    assert wait_for_free_cpus(2.0) == 2.0, "actors / placement group left behind"


@pytest.mark.timeout(180)
def test_ray_worker_failure_names_the_rank(local_ray, tmp_path: Path) -> None:
    with pytest.raises(WorkerError) as caught:
        # The launcher itself: launch_training would refuse this resume before starting workers.
        from layerpar.launchers.ray_actors import launch_ray

        launch_ray(tiny_config(tmp_path, "never-ran"), load_cluster_config(CLUSTER), resume=True)
    error = caught.value
    assert error.rank in (0, 1)
    assert "nothing to resume" in error.message and "Traceback" in error.message
    assert ray.is_initialized()
    assert wait_for_free_cpus(2.0) == 2.0, "actors / placement group left behind after a failure"
