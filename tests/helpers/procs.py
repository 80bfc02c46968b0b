"""Small process helpers shared by the integration tests.

* :func:`free_port` -- a TCP port on 127.0.0.1 that is free right now
  (``layerpar.launchers.env.free_port``, re-exported).
* :func:`run_checked` -- run a command; on failure (non-zero exit or timeout)
  raise ``AssertionError`` carrying the command, exit code and the tails of
  stdout/stderr, so a failing test says *why* without re-running anything.
* :func:`tail` -- the last lines of a text (or of a file).

The child of :func:`run_checked` runs in its own session (process group): on a
timeout the whole group is killed, so launchers such as ``mpirun``/``srun`` do
not leave orphaned workers behind.  (Daemons that fork and ``setsid`` leave
that group, which is what they should do.)
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from layerpar.launchers.env import free_port

__all__ = ["free_port", "run_checked", "tail", "format_cmd"]

TAIL_LINES = 40


def tail(text: str | bytes | os.PathLike | None, lines: int = TAIL_LINES) -> str:
    """Last ``lines`` lines of ``text``; a ``Path`` is read (missing -> note)."""
    if text is None:
        return ""
    if isinstance(text, os.PathLike):
        p = Path(text)
        try:
            text = p.read_text(errors="replace")
        except OSError as exc:
            return f"<cannot read {p}: {exc}>"
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    parts = text.rstrip("\n").splitlines()
    if len(parts) > lines:
        parts = [f"... ({len(parts) - lines} earlier lines omitted)"] + parts[-lines:]
    return "\n".join(parts)


def format_cmd(cmd: str | Sequence[str | os.PathLike]) -> str:
    if isinstance(cmd, str):
        return cmd
    return shlex.join(str(c) for c in cmd)


def _kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def run_checked(
    cmd: str | Sequence[str | os.PathLike],
    env: Mapping[str, str] | None = None,
    timeout: float | None = 60.0,
    cwd: str | os.PathLike | None = None,
    *,
    check: bool = True,
    input: str | None = None,
) -> subprocess.CompletedProcess:
    """Run ``cmd`` (a list, or a string for ``bash -c``) and capture its output.

    ``env`` replaces the environment entirely (pass ``{**os.environ, ...}`` to
    extend it); ``None`` inherits ours.  Returns the ``CompletedProcess`` (text
    mode).  Raises ``AssertionError`` if the command exits non-zero (unless
    ``check=False``) or runs past ``timeout`` seconds -- in that case its whole
    process group is killed first.  A missing executable also raises
    ``AssertionError``.
    """
    shell = isinstance(cmd, str)
    argv = cmd if shell else [str(c) for c in cmd]
    shown = format_cmd(cmd)
    try:
        proc = subprocess.Popen(
            argv,
            shell=shell,
            executable="/bin/bash" if shell else None,
            env=dict(env) if env is not None else None,
            cwd=None if cwd is None else str(cwd),
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
            start_new_session=True,
        )
    except OSError as exc:
        raise AssertionError(f"could not start command: {shown}\n{exc}") from exc

    try:
        out, err = proc.communicate(input=input, timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        out, err = proc.communicate()
        raise AssertionError(
            f"command timed out after {timeout} s (process group killed): {shown}\n"
            f"cwd: {cwd or os.getcwd()}\n"
            f"--- stdout (tail) ---\n{tail(out)}\n"
            f"--- stderr (tail) ---\n{tail(err)}"
        ) from None
    except BaseException:
        _kill_group(proc)
        proc.wait()
        raise

    result = subprocess.CompletedProcess(argv, proc.returncode, out, err)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"command failed with exit code {proc.returncode}: {shown}\n"
            f"cwd: {cwd or os.getcwd()}\n"
            f"--- stdout (tail) ---\n{tail(out)}\n"
            f"--- stderr (tail) ---\n{tail(err)}"
        )
    return result


def spawn_ranks(target: Any, world: int, args: tuple[Any, ...], timeout: float) -> list[Any]:
    """Run ``target(rank, port, *args, results)`` in ``world`` spawned processes (a fresh
    rendezvous port) and return each rank's reply from the queue; fails with every rank's
    error text when a reply is an ``("error", rank, text)``."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=target, args=(r, port, *args, results)) for r in range(world)]
    for proc in procs:
        proc.start()
    try:
        replies = [results.get(timeout=timeout) for _ in procs]
    finally:
        for proc in procs:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.terminate()
    errors = [reply[2] for reply in replies if reply[0] == "error"]
    assert not errors, "\n".join(errors)
    return replies
