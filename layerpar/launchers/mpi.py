"""MPI launcher: ``mpirun`` starts the ranks, mpi4py agrees on the rendezvous, gloo/NCCL move
the tensors (the torch wheel has no MPI backend).

    layerpar train --config configs/demo.yaml --cluster cluster_configs/mpi.yaml
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from typing import Any

from layerpar.config import RunConfig
from layerpar.errors import LaunchError, WorkerError
from layerpar.launchers.cluster import ClusterConfig
from layerpar.parallel.run import run_dir_for, write_run_config


def mpirun_command(cluster: ClusterConfig, world_size: int, config_path: str, resume: bool) -> list[str]:
    mpirun = shutil.which(cluster.mpi.mpirun)
    if mpirun is None:
        raise LaunchError(f"{cluster.mpi.mpirun!r} not found: install Open MPI (apt-get install openmpi-bin)")
    command = [mpirun, "-np", str(world_size)]
    if os.geteuid() == 0:
        command += ["--allow-run-as-root"]
    command += ["--oversubscribe", *cluster.mpi.extra_args]
    python = cluster.mpi.python or sys.executable
    command += [python, "-m", "layerpar.launchers.mpi_entry", "--config", config_path]
    return command + (["--resume"] if resume else [])


def launch_mpi(config: RunConfig, cluster: ClusterConfig, resume: bool = False) -> dict[str, Any] | None:
    run_dir = run_dir_for(config)
    write_run_config(run_dir, config)
    world_size = config.parallel.stages * config.parallel.replicas
    command = mpirun_command(cluster, world_size, str(run_dir / "config.yaml"), resume)
    done = subprocess.run(command, capture_output=True, text=True, timeout=cluster.timeout_min * 60)
    if done.returncode != 0:
        raise WorkerError(f"mpirun exited with {done.returncode}:\n{done.stderr[-4000:]}", None)
    return json.loads((run_dir / "summary.json").read_text())
