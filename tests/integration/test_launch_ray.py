"""End-to-end through the Ray coordinator on a real local Ray (one Ray per test module)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from layerpar.config import load_config
from layerpar.errors import WorkerError
from layerpar.launchers import launch_training
from layerpar.launchers.cluster import load_cluster_config

ray = pytest.importorskip("ray")
ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _config(out: Path, *extra: str):
    return load_config(ROOT / "configs" / "digits_tiny.yaml", [
        "data.train_limit=320", "train.batch_size=32", "train.epochs=1", "train.progress=false",
        f"train.out_dir={out}", "train.run_name=ray", "layerpar.warmup_epochs=0.3", *extra])


@pytest.mark.timeout(240)
def test_ray_trains_end_to_end(local_ray, tmp_path: Path) -> None:
    record = launch_training(_config(tmp_path), load_cluster_config(ROOT / "cluster_configs/ray_local.yaml"))
    assert record is not None and 0.0 <= record["final_test_acc"] <= 1.0
    summary = json.loads((tmp_path / "ray" / "summary.json").read_text())
    assert summary["final_test_acc"] == record["final_test_acc"]
    assert (tmp_path / "ray" / "model.pt").is_file()
    assert ray.is_initialized(), "the launcher must not shut down a Ray it did not start"


@pytest.mark.timeout(240)
def test_worker_failure_reaches_driver_with_rank(local_ray, tmp_path: Path) -> None:
    # A worker whose data cache is a file cannot load data: the error must name its rank.
    bad_cache = tmp_path / "not-a-dir"
    bad_cache.write_text("x")
    config = _config(tmp_path, "data.dataset=mnist", f"data.cache_dir={bad_cache}")
    with pytest.raises(WorkerError) as caught:
        launch_training(config, load_cluster_config(ROOT / "cluster_configs/ray_local.yaml"))
    assert caught.value.rank is not None
    assert "rank" in str(caught.value)
