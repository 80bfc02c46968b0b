"""Child processes of the subprocess launchers (torchrun, mpirun): environment, live output,
and stopping a whole process group on timeout, Ctrl-C or SIGTERM."""

from __future__ import annotations

import collections
import contextlib
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from layerpar.errors import LaunchError, WorkerError
from layerpar.parallel.parent_death import die_with_parent

TAIL_LINES = 60


def child_env(threads: int = 1, extra: dict[str, str] | None = None) -> dict[str, str]:
    """This environment, plus unbuffered output, the worker's thread count and this package on
    PYTHONPATH (so a source checkout works without ``pip install -e``)."""
    env = dict(os.environ)
    package_root = str(Path(__file__).resolve().parents[2])
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != package_root]
    env["PYTHONPATH"] = os.pathsep.join([package_root, *paths])
    env["PYTHONUNBUFFERED"] = "1"
    env["OMP_NUM_THREADS"] = str(threads)
    env.update(extra or {})
    return env


def run_streaming(
    command: list[str], env: dict[str, str], timeout_s: float | None, name: str
) -> tuple[int, str]:
    """Run ``command`` in its own session, echo its output to stderr as it comes (live progress),
    and return (exit code, the last lines of output).

    On a timeout or KeyboardInterrupt the whole process group is stopped (TERM, then KILL), so
    no rank outlives the launcher.
    """
    try:
        proc = subprocess.Popen(
            command,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            errors="replace",
            bufsize=1,
            start_new_session=True,
            # Killed with the driver, even by SIGKILL (no cleanup code runs then).
            preexec_fn=die_with_parent,
        )
    except OSError as error:
        raise LaunchError(f"cannot start {name} ({command[0]}): {error}") from error
    lines: collections.deque[str] = collections.deque(maxlen=TAIL_LINES * 4)

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            try:
                sys.stderr.write(line)
                sys.stderr.flush()
            except (OSError, ValueError):  # stderr closed under us: keep collecting
                pass

    reader = threading.Thread(target=pump, name=f"{name}-output", daemon=True)
    reader.start()
    # The ranks live in their own session (a terminal's Ctrl-C reaches only us): on Ctrl-C or
    # SIGTERM we stop them, rather than leave them training without a driver.
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupt) if in_main else None
    try:
        code = proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        stop_group(proc)
        reader.join(timeout=5)
        raise WorkerError(
            f"{name} still running after {timeout_s:.0f} s (timeout_min in the cluster "
            f"config); stopped it\n{tail(''.join(lines))}",
            None,
        ) from None
    except BaseException:
        stop_group(proc)
        raise
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous)
    reader.join(timeout=10)
    return code, "".join(lines)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def stop_group(proc: subprocess.Popen[str], grace_s: float = 10.0) -> None:
    """SIGTERM the process group of ``proc`` (a session leader), then SIGKILL after ``grace_s``."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait_s)
            break
        except subprocess.TimeoutExpired:
            continue
    with contextlib.suppress(ProcessLookupError, PermissionError):  # children that outlived the leader
        os.killpg(proc.pid, signal.SIGKILL)


def tail(text: str, lines: int = TAIL_LINES) -> str:
    """The last ``lines`` lines of ``text``."""
    parts = text.rstrip("\n").splitlines()
    if len(parts) > lines:
        parts = [f"... ({len(parts) - lines} earlier lines)"] + parts[-lines:]
    return "\n".join(parts)
