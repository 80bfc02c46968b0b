"""MPI launcher: ``mpirun`` starts the ranks, mpi4py agrees on the rendezvous, gloo/NCCL move the
tensors (the torch wheel has no MPI backend).

    layerpar train --config configs/demo.yaml --cluster cluster_configs/mpi.yaml

runs, in its own session,

    mpirun [--allow-run-as-root] --oversubscribe -np K [mpi.extra_args]
        python -m layerpar.launchers.mpi_entry --config RUN/config.yaml [--resume]

``--allow-run-as-root`` is added only when running as root.  Several nodes: give Open MPI a
host file in ``mpi.extra_args`` (``[--hostfile, hosts.txt]``); the launcher then adds
``-npernode`` and forwards the environment layerpar needs with ``-x``.  A failing rank's error
(rank and traceback) comes back as ``WorkerError``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any

from layerpar.config import RunConfig
from layerpar.errors import LaunchError, WorkerError
from layerpar.launchers.cluster import ClusterConfig
from layerpar.launchers.mpi_entry import ERROR_DIR_ENV
from layerpar.launchers.processes import child_env, run_streaming, tail

FORWARDED_ENV = ("PYTHONPATH", "PYTHONUNBUFFERED", "OMP_NUM_THREADS", ERROR_DIR_ENV)


def mpirun_command(cluster: ClusterConfig, world_size: int, config_path: str, resume: bool) -> list[str]:
    """The mpirun command line that starts ``world_size`` ranks of ``mpi_entry``."""
    mpirun = shutil.which(cluster.mpi.mpirun)
    if mpirun is None:
        raise LaunchError(
            f"{cluster.mpi.mpirun!r} not found on PATH: install Open MPI (apt-get install -y openmpi-bin "
            "libopenmpi-dev) or set mpi.mpirun in the cluster config to its full path"
        )
    command = [mpirun]
    if os.geteuid() == 0:
        command.append("--allow-run-as-root")
    command += ["--oversubscribe", "-np", str(world_size)]
    if cluster.nodes > 1:
        command += ["-npernode", str(cluster.workers_on_each_node(world_size))]
        for name in FORWARDED_ENV:
            command += ["-x", name]
    command += list(cluster.mpi.extra_args)
    python = cluster.mpi.python or sys.executable
    command += [python, "-m", "layerpar.launchers.mpi_entry", "--config", config_path]
    if cluster.master_port:
        command += ["--master-port", str(cluster.master_port)]
    return command + (["--resume"] if resume else [])


def launch_mpi(config: RunConfig, cluster: ClusterConfig, resume: bool = False) -> dict[str, Any] | None:
    """Train ``config`` with one MPI rank per worker; returns rank 0's run summary."""
    from layerpar.parallel.run import pin_run_dir, run_dir_for, write_run_config

    if cluster.mpi.python is None and importlib.util.find_spec("mpi4py") is None:
        raise LaunchError(f"mpi4py is not installed for {sys.executable}: pip install 'layerpar[mpi]'")
    world_size = config.parallel.stages * config.parallel.replicas
    config = pin_run_dir(config)
    run_dir = run_dir_for(config)
    command = mpirun_command(cluster, world_size, str(run_dir / "config.yaml"), resume)
    write_run_config(run_dir, config)
    summary_path = run_dir / "summary.json"
    summary_path.unlink(missing_ok=True)
    error_dir = run_dir / "mpi_errors"
    shutil.rmtree(error_dir, ignore_errors=True)
    env = child_env(threads=config.parallel.threads_per_worker, extra={ERROR_DIR_ENV: str(error_dir)})
    code, output = run_streaming(command, env, cluster.timeout_min * 60, name="mpirun")
    if code != 0:
        raise _failure(code, output, error_dir)
    if not summary_path.is_file():
        raise WorkerError(f"mpirun exited 0 but rank 0 wrote no {summary_path}\n{tail(output)}", 0)
    return json.loads(summary_path.read_text())


def _failure(code: int, output: str, error_dir: Path) -> WorkerError:
    """The first failing rank (earliest error file), else the rank mpirun names."""
    errors = []
    for path in error_dir.glob("rank*.json"):
        try:
            data = json.loads(path.read_text())
            errors.append((path.stat().st_mtime_ns, int(data["rank"]), str(data["message"])))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    if errors:
        _, first_rank, message = min(errors)
        return WorkerError(message.rstrip(), first_rank)
    match = re.search(r"Process name: \[\[\d+,\d+\],(\d+)\]", output)
    rank = int(match.group(1)) if match else None
    return WorkerError(f"mpirun exited with code {code}\n--- mpirun output ---\n{tail(output)}", rank)
