"""Slurm end to end on a real single-node Slurm cluster (tests/helpers/slurm_cluster.py):
``run_blocking`` renders the sbatch script, submits it with sbatch, polls scontrol and returns
rank 0's summary; a failing rank comes back as WorkerError with its rank."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import pytest

from layerpar.config import RunConfig, load_config
from layerpar.errors import WorkerError
from layerpar.launchers import launch_training, load_cluster_config
from layerpar.launchers.cluster import ClusterConfig
from tests.helpers.slurm_cluster import slurm_cluster_fixture

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slurm, pytest.mark.slow]

slurm_cluster = slurm_cluster_fixture()


@pytest.fixture
def cluster(slurm_cluster, monkeypatch) -> ClusterConfig:
    """slurm_cpu.yaml, pointed at the test cluster, with this interpreter on the compute node."""
    monkeypatch.setenv("SLURM_CONF", str(slurm_cluster.conf_path))
    shipped = load_cluster_config(ROOT / "cluster_configs" / "slurm_cpu.yaml")
    return dataclasses.replace(shipped, timeout_min=2.5, slurm=dataclasses.replace(shipped.slurm, python=sys.executable))


def tiny_config(out: Path, name: str, method: str = "pipelined") -> RunConfig:
    return load_config(None, [f"layerpar.method={method}",
        "data.dataset=digits", "model.name=resnet20", "data.train_limit=256", "train.batch_size=32",
        "train.epochs=1", "parallel.stages=2", "parallel.balance=blocks",
        "train.progress=false", "parallel.timeout_s=60", f"train.out_dir={out}", f"train.run_name={name}",
    ])


@pytest.mark.timeout(180)
@pytest.mark.parametrize("method", ["pipelined", "al"])
def test_slurm_trains_end_to_end(cluster: ClusterConfig, tmp_path: Path, capsys, method: str) -> None:
    record = launch_training(tiny_config(tmp_path, "x", method), cluster)
    run_dir = tmp_path / "x"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert isinstance(summary["final_test_acc"], float) and 0.0 <= summary["final_test_acc"] <= 1.0
    assert summary["method"] == method
    assert record is not None and record["final_test_acc"] == summary["final_test_acc"]
    assert (run_dir / "model.pt").is_file() and (run_dir / "job.sbatch").is_file()
    logs = list((run_dir / "slurm_logs").glob("layerpar-x-*.out"))
    assert len(logs) == 1 and "rendezvous 127.0.0.1:" in logs[0].read_text()
    assert "submitted Slurm job" in capsys.readouterr().out


@pytest.mark.timeout(180)
def test_slurm_worker_failure_names_the_rank(cluster: ClusterConfig, tmp_path: Path) -> None:
    from layerpar.launchers.slurm import run_blocking

    # run_blocking itself: launch_training would refuse this resume before submitting.
    with pytest.raises(WorkerError) as caught:
        run_blocking(tiny_config(tmp_path, "never-ran"), cluster, resume=True)
    error = caught.value
    assert error.rank in (0, 1)
    assert "FAILED" in error.message and "nothing to resume" in error.message


@pytest.mark.timeout(420)
def test_slurm_time_limit_signal_checkpoints_requeues_and_ends_like_an_uninterrupted_run(
    cluster: ClusterConfig, tmp_path: Path, slurm_cluster
) -> None:
    """Slurm's time-limit warning (the USR1 of --signal=B:USR1@N, sent here at once with
    scancel --signal --batch): the run checkpoints at the next batch, the job requeues itself
    and the requeued job resumes; the final parameters are those of a run never stopped."""
    import os
    import subprocess
    import threading

    import torch

    from layerpar.parallel.trainer import LayerParallelTrainer
    from tests.helpers.faults import wait_for

    def config(name: str) -> RunConfig:
        return load_config(ROOT / "configs" / "digits_tiny.yaml", [
            "layerpar.method=pipelined", "layerpar.warmup_epochs=0", "layerpar.serial_final_epochs=0",
            "data.train_limit=640", "train.batch_size=32", "train.epochs=4", "train.dtype=float64",
            "train.progress=false", "checkpoint.every_min=null", "train.log_every=2",
            f"train.out_dir={tmp_path}", f"train.run_name={name}"])

    out: dict = {}
    thread = threading.Thread(target=lambda: out.update(record=launch_training(
        config("signalled"), dataclasses.replace(cluster, timeout_min=6))), daemon=True)
    thread.start()
    run_dir = tmp_path / "signalled"
    metrics = run_dir / "metrics.jsonl"
    wait_for(lambda: metrics.is_file() and len(metrics.read_text().splitlines()) >= 4, 120, "training to start")
    log = wait_for(lambda: next(iter((run_dir / "slurm_logs").glob("*.out")), None), 10, "the job log")
    job_id = log.stem.rsplit("-", 1)[1]
    env = {**os.environ, "SLURM_CONF": str(slurm_cluster.conf_path)}
    subprocess.run(["scancel", "--signal=USR1", "--batch", job_id], env=env, check=True, timeout=30)
    thread.join(timeout=360)
    assert not thread.is_alive() and out.get("record") is not None
    text = log.read_text()
    assert "Slurm signalled the time limit" in text and f"requeueing job {job_id}" in text, text[-3000:]
    assert "resumed" in text
    LayerParallelTrainer(config("straight")).fit()
    ours = torch.load(run_dir / "model.pt", weights_only=True)["model"]
    theirs = torch.load(tmp_path / "straight" / "model.pt", weights_only=True)["model"]
    for key in ours:
        torch.testing.assert_close(ours[key], theirs[key], rtol=1e-10, atol=1e-10, msg=key)
