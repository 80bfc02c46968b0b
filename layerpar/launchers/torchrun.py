"""torchrun launcher: ``python -m torch.distributed.run`` starts one worker per module on this node.

    layerpar launch --cluster cluster_configs/torchrun.yaml -- train --config configs/demo.yaml

runs, as a child process in its own session,

    python -m torch.distributed.run --nnodes 1 --nproc-per-node K --rdzv-backend c10d
        --rdzv-endpoint 127.0.0.1:P --rdzv-id layerpar --max-restarts R --log-dir RUN/torchrun --tee 3
        -m layerpar.launchers.torchrun --config RUN/config.yaml [--resume]

torchrun sets the contract (MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE, LOCAL_RANK); this
module's ``__main__`` is the worker entry point (``layerpar.parallel.worker.main``) wrapped in
torch's ``@record``, so a failing rank leaves its exception in torchrun's ``error.json``.  The
driver echoes torchrun's output live, and on failure raises ``WorkerError`` with the rank and
traceback of the first failure.

Several nodes: run torchrun yourself on every node (``--nnodes N --node-rank I --master-addr
HOST -m layerpar.parallel.worker --config run.yaml``), or use ``launcher: slurm``.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

from layerpar.config import RunConfig
from layerpar.errors import LaunchError, WorkerError
from layerpar.launchers.cluster import ClusterConfig
from layerpar.launchers.env import free_port
from layerpar.launchers.processes import child_env, run_streaming, tail
from layerpar.parallel.parent_death import DIE_WITH_PARENT_ENV


def torchrun_command(
    config_path: str, world_size: int, port: int, log_dir: str, resume: bool, max_restarts: int = 0
) -> list[str]:
    """The torchrun command line that starts ``world_size`` workers on this node.  After a
    failure torchrun restarts every worker (``--max-restarts``); a restarted worker resumes
    from the newest complete checkpoint set (``parallel.worker.main``)."""
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes",
        "1",
        "--nproc-per-node",
        str(world_size),
        # The c10d rendezvous (not the static --master-addr/--master-port one): it makes a new
        # store for every restart round, where the static one keeps the dead round's addresses
        # (a restarted rank 0 then dials its dead peer: "Connection refused").
        "--rdzv-backend",
        "c10d",
        "--rdzv-endpoint",
        f"127.0.0.1:{port}",
        "--rdzv-id",
        "layerpar",
        "--max-restarts",
        str(max_restarts),
        "--log-dir",
        log_dir,
        "--tee",
        "3",
        "-m",
        "layerpar.launchers.torchrun",
        "--config",
        config_path,
    ]
    return command + (["--resume"] if resume else [])


def launch_torchrun(config: RunConfig, cluster: ClusterConfig, resume: bool = False) -> dict[str, Any] | None:
    """Train ``config`` with one torchrun-started process per worker; returns rank 0's summary."""
    from layerpar.parallel.run import pin_run_dir, run_dir_for, write_run_config

    world_size = config.parallel.stages * config.parallel.replicas
    if cluster.nodes != 1:
        raise LaunchError(
            f"launcher: torchrun starts workers on this node only, but the cluster config asks for "
            f"nodes: {cluster.nodes}; use launcher: slurm, or run `torchrun --nnodes {cluster.nodes} "
            "--node-rank I --master-addr HOST -m layerpar.parallel.worker --config RUN/config.yaml` "
            "on every node"
        )
    per_node = cluster.workers_on_each_node(world_size)
    if per_node != world_size:
        raise LaunchError(
            f"workers_per_node: {per_node} does not match the run's {world_size} workers "
            f"(parallel.stages × parallel.replicas) on one node; remove workers_per_node "
            f"or set it to {world_size}"
        )
    config = pin_run_dir(config)
    run_dir = run_dir_for(config)
    write_run_config(run_dir, config)
    summary_path = run_dir / "summary.json"
    summary_path.unlink(missing_ok=True)  # never report a summary an earlier run left behind
    log_dir = run_dir / "torchrun"
    port = cluster.master_port or free_port()
    command = torchrun_command(
        str(run_dir / "config.yaml"), world_size, port, str(log_dir), resume, cluster.max_restarts
    )
    env = child_env(threads=config.parallel.threads_per_worker, extra={DIE_WITH_PARENT_ENV: "1"})
    env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    before = set(log_dir.glob("*"))
    code, output = run_streaming(command, env, cluster.timeout_min * 60, name="torchrun")
    if code != 0:
        raise _failure(code, output, sorted(set(log_dir.glob("*")) - before))
    if not summary_path.is_file():
        raise WorkerError(f"torchrun exited 0 but rank 0 wrote no {summary_path}\n{tail(output)}", 0)
    return json.loads(summary_path.read_text())


# --------------------------------------------------------------------------------------------
# Reading a failure back


def _failure(code: int, output: str, run_logs: list[Path]) -> WorkerError:
    """The first failing rank's error from torchrun's error.json files (else from its output)."""
    errors = []
    for run_log in run_logs:
        for path in run_log.glob("attempt_*/*/error.json"):
            try:
                data = json.loads(path.read_text())["message"]
                if isinstance(data, str):
                    data = {"message": data}
                errors.append((path.stat().st_mtime_ns, int(path.parent.name), data))
            except (OSError, ValueError, KeyError, TypeError):
                continue
    if errors:
        _, first_rank, data = min(errors, key=lambda error: (error[0], error[1]))
        message = re.sub(r"^WorkerError: worker rank \d+ failed:\n", "", str(data.get("message", "")))
        if "Traceback" not in message:
            message += "\n" + str(data.get("extraInfo", {}).get("py_callstack", ""))
        return WorkerError(message.rstrip(), first_rank)
    match = re.search(r"Root Cause.*?rank\s*:\s*(\d+)", output, re.S)
    rank = int(match.group(1)) if match else None
    stderr_tail = ""
    if rank is not None:
        for run_log in run_logs:
            for path in run_log.glob(f"attempt_*/{rank}/stderr.log"):
                stderr_tail += f"--- {path} ---\n{tail(path.read_text(errors='replace'))}\n"
    return WorkerError(
        f"torchrun exited with code {code}\n{stderr_tail}--- torchrun output ---\n{tail(output)}", rank
    )


def _worker_main(argv: list[str] | None = None) -> None:
    """What torchrun runs on every rank: the worker entry point, its errors recorded for torchrun."""
    from torch.distributed.elastic.multiprocessing.errors import record

    from layerpar.parallel.worker import main

    record(main)(argv)


if __name__ == "__main__":
    _worker_main()
