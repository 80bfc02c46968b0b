"""Who starts the worker processes.  Every launcher ends in the same environment contract
(MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE, LOCAL_RANK) and the same entry point,
``layerpar.parallel.worker.run_worker``."""

from __future__ import annotations

from typing import Any

from layerpar.config import RunConfig
from layerpar.launchers.cluster import ClusterConfig, load_cluster_config


def launch_training(config: RunConfig, cluster: ClusterConfig, resume: bool = False) -> dict[str, Any] | None:
    """Train ``config`` where ``cluster`` says; returns rank 0's run summary record (with the
    restarts it took, also written to summary.json)."""
    record = _launch(config, cluster, resume)
    if record is not None and record.get("restarts"):
        from pathlib import Path

        from layerpar.parallel.recorder import write_json_atomic

        write_json_atomic(Path(record["run_dir"]) / "summary.json", record)
    return record


def _launch(config: RunConfig, cluster: ClusterConfig, resume: bool) -> dict[str, Any] | None:
    from layerpar.parallel.run import check_run_dir, pin_run_dir

    config = pin_run_dir(config)
    check_run_dir(config, resume)
    if config.train.mode == "serial" or cluster.launcher == "inprocess":
        from layerpar.parallel.trainer import LayerParallelTrainer, SerialTrainer

        trainer = SerialTrainer(config) if config.train.mode == "serial" else LayerParallelTrainer(config)
        return trainer.fit(resume=resume).record
    from layerpar.parallel.worker import check_one_process_only

    check_one_process_only(config)  # before any worker process starts
    if cluster.launcher == "local":
        from layerpar.launchers.local import launch_local

        return launch_local(
            config,
            resume=resume,
            timeout_s=cluster.timeout_min * 60,
            port=cluster.master_port,
            max_restarts=cluster.max_restarts,
        )
    if cluster.launcher == "torchrun":
        from layerpar.launchers.torchrun import launch_torchrun

        return launch_torchrun(config, cluster, resume=resume)
    if cluster.launcher == "ray":
        from layerpar.launchers.ray_actors import launch_ray

        return launch_ray(config, cluster, resume=resume)
    if cluster.launcher == "mpi":
        from layerpar.launchers.mpi import launch_mpi

        return launch_mpi(config, cluster, resume=resume)
    if cluster.launcher == "slurm":
        from layerpar.launchers.slurm import run_blocking

        return run_blocking(config, cluster, resume=resume)
    from layerpar.errors import ConfigError

    raise ConfigError(f"unknown launcher {cluster.launcher!r}")


__all__ = ["ClusterConfig", "launch_training", "load_cluster_config"]
