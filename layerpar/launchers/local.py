"""Local launcher: one spawned process per worker on this machine.

layerpar launch --cluster cluster_configs/local_cpu.yaml -- train --config configs/demo.yaml
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import time
import traceback
from typing import Any

from layerpar.config import RunConfig
from layerpar.errors import WorkerError
from layerpar.launchers.env import contract, free_port


def _entry(rank: int, world_size: int, port: int, config: RunConfig, resume: bool, results: Any) -> None:
    os.environ.update(contract("127.0.0.1", port, rank, world_size, rank))
    try:
        from layerpar.parallel.worker import run_worker

        summary = run_worker(config, resume=resume)
        results.put((rank, "ok", summary))
    except BaseException as error:  # noqa: BLE001 - every failure must reach the driver
        message = error.message if isinstance(error, WorkerError) else f"{error!r}\n{traceback.format_exc()}"
        results.put((rank, "error", message))
        raise SystemExit(1) from None


def _check_alive(procs: list[Any], pending: set[int]) -> None:
    """A worker that died without reporting (a crash at start-up, a kill) fails the run now
    rather than leaving the driver waiting for the process-group timeout."""
    for rank in sorted(pending):
        code = procs[rank].exitcode
        if code is not None:
            raise WorkerError(f"worker process exited with code {code} before reporting a result", rank)


def launch_local(
    config: RunConfig, resume: bool = False, timeout_s: float | None = None, port: int | None = None
) -> dict[str, Any] | None:
    """Run ``stages × replicas`` worker processes here; returns rank 0's run summary.

    The first worker failure terminates the others and is raised as WorkerError with its rank.
    """
    world_size = config.parallel.stages * config.parallel.replicas
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    port = port or free_port()
    procs = [
        ctx.Process(target=_entry, args=(r, world_size, port, config, resume, results), daemon=False)
        for r in range(world_size)
    ]
    for proc in procs:
        proc.start()
    summary: dict[str, Any] | None = None
    deadline = time.monotonic() + (timeout_s or 7 * 24 * 3600)
    try:
        pending = set(range(world_size))
        while pending:
            try:
                rank, status, payload = results.get(timeout=2.0)
            except queue.Empty:
                _check_alive(procs, pending)
                if time.monotonic() > deadline:
                    raise WorkerError(
                        f"no result from ranks {sorted(pending)} within {timeout_s} s", None
                    ) from None
                continue
            pending.discard(rank)
            if status == "error":
                raise WorkerError(payload, rank)
            if rank == 0:
                summary = payload
    finally:
        for proc in procs:
            proc.join(timeout=10)
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)
    return summary
