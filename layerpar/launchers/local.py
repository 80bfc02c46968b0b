"""Local launcher: one spawned process per worker on this machine.

layerpar launch --cluster cluster_configs/local_cpu.yaml -- train --config configs/demo.yaml

Workers die with the driver (``lifetime.die_with_parent``; SIGTERM and Ctrl-C stop them too).
The first worker that fails ends the attempt; the one blamed is the one that died first (its
peers only see a closed connection), with its exit code or signal.  A worker that died, or
peers that lost it, restart the group from the newest complete checkpoint set, up to
``max_restarts`` times.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import signal
import threading
import time
import traceback
from typing import Any

from layerpar.config import RunConfig
from layerpar.errors import LayerparError, WorkerError
from layerpar.launchers.env import contract, free_port
from layerpar.launchers.lifetime import describe_exit, die_with_parent, is_stopped, run_with_restarts

BLAME_GRACE_S = 3.0
"""After a worker reports a failure, how long to look for a peer that died without reporting
(the cause: a killed rank's peers report "connection closed" within milliseconds)."""


def _entry(
    rank: int, world_size: int, port: int, config: RunConfig, resume: bool | str, results: Any
) -> None:
    die_with_parent()
    os.environ.update(contract("127.0.0.1", port, rank, world_size, rank))
    try:
        from layerpar.parallel.worker import run_worker

        summary = run_worker(config, resume=resume)
        results.put((rank, "ok", summary, False))
    except BaseException as error:  # noqa: BLE001 - every failure must reach the driver
        if isinstance(error, WorkerError):
            message, retryable = error.message, error.retryable
        else:
            message = f"{error!r}\n{traceback.format_exc()}"
            retryable = not isinstance(error, (LayerparError, KeyboardInterrupt))
        results.put((rank, "error", message, retryable))
        raise SystemExit(1) from None


Reports = dict[int, tuple[str, Any, bool]]
"""rank -> (status "ok"/"error", summary or message, retryable)."""


def _collect(results: Any, reports: Reports, timeout_s: float) -> bool:
    """Read one report into ``reports``; False when none came within ``timeout_s``."""
    try:
        rank, status, payload, retryable = results.get(timeout=timeout_s)
    except queue.Empty:
        return False
    reports[rank] = (status, payload, retryable)
    return True


def _silent_death(procs: list[Any], results: Any, reports: Reports) -> WorkerError | None:
    """The first rank whose process exited without reporting (after giving a report written
    just before its exit time to arrive)."""
    dead = [rank for rank, proc in enumerate(procs) if rank not in reports and proc.exitcode is not None]
    if dead:
        _collect(results, reports, 1.0)
        dead = [rank for rank in dead if rank not in reports]
    if not dead:
        return None
    rank = dead[0]
    return WorkerError(
        f"worker process (pid {procs[rank].pid}) died before reporting a result: "
        f"{describe_exit(procs[rank].exitcode)}",
        rank,
        retryable=True,
    )


def _blame(procs: list[Any], results: Any, reports: Reports, reporter: int) -> WorkerError:
    """The failure to raise when ``reporter`` reported one.  An error a worker raised on purpose
    is its own; a lost connection is usually a peer's death (or a stopped peer): name that."""
    _, message, retryable = reports[reporter]
    if not retryable:
        return WorkerError(message, reporter)
    first_line = message.strip().splitlines()[0] if message.strip() else "an error"
    deadline = time.monotonic() + BLAME_GRACE_S
    while time.monotonic() < deadline:
        dead = _silent_death(procs, results, reports)
        if dead is not None:
            dead.message += f"\n(rank {reporter} then failed: {first_line})"
            return dead
        _collect(results, reports, 0.05)
    stopped = [
        r for r, p in enumerate(procs) if r not in reports and p.exitcode is None and is_stopped(p.pid)
    ]
    if stopped:
        return WorkerError(
            f"worker rank {stopped[0]} (pid {procs[stopped[0]].pid}) is stopped (SIGSTOP?) and "
            f"stopped answering; rank {reporter} gave up on it:\n{message}",
            stopped[0],
            retryable=True,
        )
    return WorkerError(message, reporter, retryable=True)


def _wait(procs: list[Any], results: Any, timeout_s: float | None) -> dict[str, Any] | None:
    """Rank 0's summary once every rank reported success; the first failure raised."""
    deadline = time.monotonic() + (timeout_s or 7 * 24 * 3600)
    reports: Reports = {}
    while len(reports) < len(procs) or any(status == "error" for status, _, _ in reports.values()):
        errors = [rank for rank, (status, _, _) in reports.items() if status == "error"]
        if errors:
            raise _blame(procs, results, reports, errors[0])
        if _collect(results, reports, 0.5):
            continue
        dead = _silent_death(procs, results, reports)
        if dead is not None:
            raise dead
        if time.monotonic() > deadline:
            raise WorkerError(
                f"no result from ranks {sorted(set(range(len(procs))) - set(reports))} within "
                f"{timeout_s} s (timeout_min in the cluster config); stopped them",
                None,
            )
    return reports[0][1]


def _stop_all(procs: list[Any], grace_s: float) -> None:
    """Join finished workers; SIGTERM, then SIGKILL (which also ends a stopped one), the rest."""
    for proc in procs:
        proc.join(timeout=grace_s)
        grace_s = 0.1  # the first join waits for a clean exit; the others have had that time
    for proc in procs:
        if proc.is_alive():
            proc.terminate()
    for proc in procs:
        proc.join(timeout=3)
        if proc.is_alive():
            proc.kill()
            proc.join(timeout=5)


def launch_once(
    config: RunConfig, resume: bool | str = False, timeout_s: float | None = None, port: int | None = None
) -> dict[str, Any] | None:
    """One attempt: ``stages × replicas`` worker processes; returns rank 0's run summary."""
    world_size = config.parallel.stages * config.parallel.replicas
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    port = port or free_port()
    procs = [
        ctx.Process(target=_entry, args=(r, world_size, port, config, resume, results), daemon=False)
        for r in range(world_size)
    ]
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupt) if in_main else None
    ok = False
    try:
        for proc in procs:
            proc.start()
        summary = _wait(procs, results, timeout_s)
        ok = True
        return summary
    finally:
        _stop_all(procs, grace_s=10.0 if ok else 0.5)
        if in_main:
            signal.signal(signal.SIGTERM, previous)


def launch_local(
    config: RunConfig,
    resume: bool | str = False,
    timeout_s: float | None = None,
    port: int | None = None,
    max_restarts: int = 0,
) -> dict[str, Any] | None:
    """Run the workers here, restarting the group after a worker death (``max_restarts``)."""
    return run_with_restarts(
        lambda mode: launch_once(config, mode, timeout_s, port), resume, max_restarts, "local launcher"
    )


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")
