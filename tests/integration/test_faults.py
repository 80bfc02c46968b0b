"""Real faults, really injected: a SIGKILLed worker under the local launcher and under Ray (the
run restarts from its last checkpoint set and ends with the uninterrupted run's parameters), a
SIGKILL in the middle of a checkpoint save, a driver killed or terminated (no worker outlives
it), a stopped worker, and a NaN loss."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from layerpar.config import RunConfig, load_config
from layerpar.launchers import launch_training, load_cluster_config
from layerpar.parallel.checkpoints import latest_set
from layerpar.parallel.trainer import LayerParallelTrainer
from tests.helpers.faults import (
    alive,
    cmdline,
    descendants,
    first_manifest,
    kill,
    ray_actor_pids,
    spawned_workers,
    wait_for,
)
from tests.helpers.runs import assert_same_models, step_losses

ROOT = Path(__file__).resolve().parents[2]
LOCAL = ROOT / "cluster_configs" / "local_cpu.yaml"
pytestmark = pytest.mark.slow

RUN = [
    "layerpar.method=pipelined", "layerpar.warmup_epochs=0", "layerpar.serial_final_epochs=0",
    "data.train_limit=640", "train.batch_size=32", "train.epochs=3", "train.dtype=float64",
    "train.progress=false", "parallel.timeout_s=30", "checkpoint.every_steps=4", "checkpoint.every_min=null",
]


def _config(out: Path, name: str, *extra: str) -> RunConfig:
    return load_config(ROOT / "configs" / "digits_tiny.yaml",
                       [*RUN, f"train.out_dir={out}", f"train.run_name={name}", *extra])


def _in_background(fn: Any) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}

    def target() -> None:
        try:
            out["result"] = fn()
        except BaseException as error:  # noqa: BLE001 - handed to the test thread
            out["error"] = error

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, out


def _kill_mid_run_and_recover(
    tmp_path: Path, cluster: Any, find_victim: Any, restarts_recorded: bool = True
) -> dict[str, Any]:
    config = _config(tmp_path, "killed")
    thread, out = _in_background(lambda: launch_training(config, cluster))
    wait_for(lambda: first_manifest(tmp_path / "killed" / "checkpoint"), 120, "the first checkpoint set")
    victim = wait_for(find_victim, 30, "a worker process to kill")
    killed_at = kill(victim, signal.SIGKILL)
    thread.join(timeout=240)
    assert not thread.is_alive(), "the run did not finish after the restart"
    if "error" in out:
        raise out["error"]
    record = out["result"]
    if not restarts_recorded:  # torchrun restarts its workers itself: the driver never sees it
        restarts, detected_s = [], float("nan")
    else:
        restarts = record["restarts"]
        assert len(restarts) == 1, restarts
        detected_s = restarts[0]["detected_unix"] - killed_at
        assert 0 <= detected_s < 15, f"the death was noticed after {detected_s:.1f} s"
    LayerParallelTrainer(_config(tmp_path, "straight")).fit()
    # K processes reproduce the in-process reference to float64 rounding (all-reduce order).
    assert_same_models(tmp_path / "straight", tmp_path / "killed", tol=1e-10)
    torch.testing.assert_close(
        torch.tensor([x or 0.0 for x in step_losses(tmp_path / "killed")]),
        torch.tensor([x or 0.0 for x in step_losses(tmp_path / "straight")]), rtol=1e-10, atol=1e-10)
    summary = json.loads((tmp_path / "killed" / "summary.json").read_text())
    assert summary.get("restarts", []) == restarts
    return {"detected_s": detected_s, "restarts": restarts}


@pytest.mark.timeout(420)
def test_local_sigkill_of_a_worker_restarts_and_matches_the_uninterrupted_run(tmp_path: Path) -> None:
    cluster = dataclasses.replace(load_cluster_config(LOCAL), max_restarts=2)
    def rank1() -> int | None:
        workers = spawned_workers(os.getpid())
        return workers[1] if len(workers) == 2 else None

    result = _kill_mid_run_and_recover(tmp_path, cluster, rank1)
    assert result["restarts"][0]["rank"] == 1  # the dead rank, not the peer that lost it
    assert "SIGKILL" in result["restarts"][0]["error"]


@pytest.mark.ray
@pytest.mark.timeout(420)
def test_ray_sigkill_of_an_actor_restarts_and_matches_the_uninterrupted_run(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    cluster = dataclasses.replace(load_cluster_config(ROOT / "cluster_configs" / "ray_local.yaml"), max_restarts=2)
    def running_actor() -> int | None:
        actors = ray_actor_pids()
        return actors[-1] if len(actors) == 2 else None  # both ranks of this run, nothing else

    result = _kill_mid_run_and_recover(tmp_path, cluster, running_actor)
    assert "Ray actor" in result["restarts"][0]["error"]


@pytest.mark.timeout(420)
def test_torchrun_restarts_a_killed_worker_and_matches_the_uninterrupted_run(tmp_path: Path) -> None:
    cluster = dataclasses.replace(load_cluster_config(ROOT / "cluster_configs" / "torchrun.yaml"), max_restarts=1)

    def worker() -> int | None:
        ranks = [p for p in descendants(os.getpid())
                 if "layerpar.launchers.torchrun" in cmdline(p) and "torch.distributed.run" not in cmdline(p)]
        return ranks[-1] if len(ranks) == 2 else None

    _kill_mid_run_and_recover(tmp_path, cluster, worker, restarts_recorded=False)
    assert list((tmp_path / "killed" / "torchrun").glob("*/attempt_1"))  # torchrun's second attempt


KILLED_SAVE = r"""
import os, signal, sys, torch
from pathlib import Path
from layerpar.parallel.checkpoints import write_shard
root, step = Path(sys.argv[1]), int(sys.argv[2])
write_shard(root, step, 0, {"step": step, "x": torch.zeros(10)})   # rank 0's shard is complete
# rank 1 is killed in the middle of its save: its bytes are written, not yet fsynced and renamed
os.fsync = lambda fd: os.kill(os.getpid(), signal.SIGKILL)
write_shard(root, step, 1, {"step": step, "x": torch.randn(1000)})
"""


@pytest.mark.timeout(240)
def test_sigkill_during_a_checkpoint_save_leaves_the_previous_set_loadable(tmp_path: Path) -> None:
    config = _config(tmp_path, "run", "train.stop_at_step=8")
    LayerParallelTrainer(config).fit()
    checkpoint_dir = tmp_path / "run" / "checkpoint"
    before = latest_set(checkpoint_dir)
    assert before is not None and before.step == 16  # 8 batches × 2 micro-batches
    proc = subprocess.run([sys.executable, "-c", KILLED_SAVE, str(checkpoint_dir), "20"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    half_written = checkpoint_dir / "step-000000020"
    assert (half_written / "rank0.pt").is_file() and list(half_written.glob(".*.tmp"))
    assert latest_set(checkpoint_dir).step == 16  # the killed set has no manifest: ignored
    LayerParallelTrainer(_config(tmp_path, "run", "train.stop_at_step=12")).fit(resume=True)
    after = latest_set(checkpoint_dir)
    assert after is not None and after.step == 24
    assert not half_written.exists(), "the incomplete older set was not removed"
    assert not list(checkpoint_dir.glob("*/.*.tmp"))


def _driver(tmp_path: Path, *extra: str) -> subprocess.Popen[str]:
    sets = [f"--set={item}" for item in [*RUN, "train.epochs=50", f"train.out_dir={tmp_path}",
                                          "train.run_name=driver", *extra]]
    return subprocess.Popen(
        [sys.executable, "-m", "layerpar", "train", "--config", str(ROOT / "configs" / "digits_tiny.yaml"),
         "--cluster", str(LOCAL), *sets],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.timeout(180)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_a_killed_driver_leaves_no_worker_behind(tmp_path: Path, sig: int) -> None:
    driver = _driver(tmp_path)
    try:
        workers = wait_for(lambda: len(spawned_workers(driver.pid)) == 2 and spawned_workers(driver.pid), 90,
                           "two worker processes")
        wait_for(lambda: (tmp_path / "driver" / "metrics.jsonl").is_file(), 90, "training to start")
        everything = descendants(driver.pid)
        sent = kill(driver.pid, sig)
        driver.wait(timeout=60)
        wait_for(lambda: not any(alive(p) for p in everything), 20, f"the workers {workers} to exit")
        assert time.time() - sent < 30
    finally:
        if driver.poll() is None:
            driver.kill()
    if sig == signal.SIGTERM:
        assert driver.returncode != 0


@pytest.mark.timeout(180)
def test_a_stopped_worker_is_killed_after_the_timeout_and_the_run_restarts(tmp_path: Path) -> None:
    """SIGSTOP: the process lives but never answers.  Its peer times out (parallel.timeout_s), the
    driver names the stopped rank, kills it (SIGKILL ends a stopped process) and restarts."""
    driver = _driver(tmp_path, "parallel.timeout_s=8", "train.epochs=3")
    try:
        workers = wait_for(lambda: len(spawned_workers(driver.pid)) == 2 and spawned_workers(driver.pid), 90,
                           "two worker processes")
        wait_for(lambda: (tmp_path / "driver" / "metrics.jsonl").is_file(), 90, "training to start")
        everything = descendants(driver.pid)
        stopped_at = kill(workers[1], signal.SIGSTOP)
        output, _ = driver.communicate(timeout=150)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 0, output[-3000:]
    assert "worker rank 1" in output and "is stopped" in output and "restart 1 of 2" in output, output[-3000:]
    restarts = json.loads((tmp_path / "driver" / "summary.json").read_text())["restarts"]
    assert restarts[0]["rank"] == 1
    assert restarts[0]["detected_unix"] - stopped_at < 8 + 15  # the timeout, then the blame grace
    assert not alive(workers[1])
    wait_for(lambda: not any(alive(p) for p in everything), 20, "every first-attempt worker to exit")


@pytest.mark.timeout(180)
@pytest.mark.parametrize("cluster", [None, LOCAL], ids=["inprocess", "local"])
def test_a_nan_loss_stops_the_run_naming_module_and_step(tmp_path: Path, cluster: Path | None) -> None:
    args = ["train", "--config", str(ROOT / "configs" / "digits_tiny.yaml"),
            *[f"--set={item}" for item in [*RUN, "optim.lr=1e6", "train.dtype=float32",
                                            f"train.out_dir={tmp_path}", "train.run_name=nan"]]]
    if cluster is not None:
        args += ["--cluster", str(cluster)]
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "layerpar", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=170)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "non-finite values at step" in proc.stderr and "Lower optim.lr" in proc.stderr, proc.stderr[-3000:]
    assert "parameters of module" in proc.stderr or "loss" in proc.stderr
    assert not (tmp_path / "nan" / "model.pt").exists()
    assert "restart 1 of" not in proc.stderr  # a NaN would recur: it is not retried
    assert time.monotonic() - started < 170
