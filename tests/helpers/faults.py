"""Real faults for the reliability tests: find a run's worker processes through /proc, kill or
stop them, and wait for conditions with a deadline."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def alive(pid: int) -> bool:
    """Running or stopped (a zombie counts as gone: it no longer runs anything)."""
    fields = _stat(pid)
    return fields is not None and fields[0] != "Z"


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (children, their children, ...)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields is not None and fields[0] != "Z":
                parents.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def spawned_workers(pid: int) -> list[int]:
    """The multiprocessing-spawned worker processes below ``pid`` (the local launcher's ranks),
    in start order (= rank order)."""
    return sorted(
        p for p in descendants(pid) if "multiprocessing.spawn" in cmdline(p) and "spawn_main" in cmdline(p)
    )


def ray_actor_pids(name: str = "RayWorker.run", within: int | None = None) -> list[int]:
    """Processes of live Ray actors whose title is ``ray::<name>``: by default the layerpar
    actors *running* a rank (Ray titles an actor by the method it executes), and only those
    below this process (a Ray started here: its raylet is our child), not another run's."""
    below = set(descendants(os.getpid() if within is None else within))
    return sorted(pid for pid in below if f"ray::{name}" in cmdline(pid) and alive(pid))


def wait_for(condition: Callable[[], T], timeout_s: float, what: str, poll_s: float = 0.05) -> T:
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(poll_s)


def first_manifest(checkpoint_dir: Path) -> Path | None:
    found = sorted(checkpoint_dir.glob("step-*/manifest.json"))
    return found[0] if found else None


def kill(pid: int, sig: int) -> float:
    """Send ``sig`` to ``pid``; returns the time it was sent (time.time())."""
    sent = time.time()
    os.kill(pid, sig)
    return sent
