"""torchrun launcher: ``python -m torch.distributed.run`` starts one worker per module.

    layerpar train --config configs/demo.yaml --cluster cluster_configs/torchrun.yaml

The resolved run config is written to the run folder first, so every rank reads the same one.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from layerpar.config import RunConfig
from layerpar.errors import WorkerError
from layerpar.launchers.cluster import ClusterConfig
from layerpar.launchers.env import free_port
from layerpar.parallel.run import run_dir_for, write_run_config


def torchrun_command(config_path: str, world_size: int, port: int, resume: bool) -> list[str]:
    command = [
        sys.executable, "-m", "torch.distributed.run",
        "--nnodes", "1", "--nproc-per-node", str(world_size),
        "--master-addr", "127.0.0.1", "--master-port", str(port),
        "-m", "layerpar.parallel.worker", "--config", config_path,
    ]
    return command + (["--resume"] if resume else [])


def launch_torchrun(config: RunConfig, cluster: ClusterConfig, resume: bool = False) -> dict[str, Any] | None:
    """Run the workers under torchrun on this node; returns the run summary (summary.json)."""
    run_dir = run_dir_for(config)
    write_run_config(run_dir, config)
    world_size = config.parallel.stages * config.parallel.replicas
    port = cluster.master_port or free_port()
    env_extra = {"GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": str(config.parallel.threads_per_worker)}
    import os

    env = {**os.environ, **env_extra}
    done = subprocess.run(
        torchrun_command(str(run_dir / "config.yaml"), world_size, port, resume),
        env=env, capture_output=True, text=True, timeout=cluster.timeout_min * 60,
    )
    if done.returncode != 0:
        raise WorkerError(f"torchrun exited with {done.returncode}:\n{done.stderr[-4000:]}", None)
    return json.loads((run_dir / "summary.json").read_text())
