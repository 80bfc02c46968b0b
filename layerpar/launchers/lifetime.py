"""How long worker processes live: they die with their driver (``parallel.parent_death``), a
dead one is named with its exit code or signal, and a run whose worker died is restarted from
its last checkpoint set.

    summary = run_with_restarts(lambda resume: launch_once(config, resume), resume, max_restarts)
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from layerpar.errors import WorkerError
from layerpar.parallel.parent_death import DIE_WITH_PARENT_ENV, die_with_parent

log = logging.getLogger(__name__)

T = TypeVar("T")

__all__ = ["DIE_WITH_PARENT_ENV", "describe_exit", "die_with_parent", "is_stopped", "run_with_restarts"]


def describe_exit(code: int | None) -> str:
    """'killed by SIGKILL (exit code -9)' / 'exit code 1' / 'still running'."""
    if code is None:
        return "still running"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"killed by {name} (exit code {code})"
    return f"exit code {code}"


def is_stopped(pid: int) -> bool:
    """Whether ``pid`` is stopped (SIGSTOP, a debugger): it will never answer its peers."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return False
    return fields[0] in ("T", "t")


def run_with_restarts(
    launch: Callable[[bool | str], T], resume: bool | str, max_restarts: int, what: str = "run"
) -> T:
    """``launch(resume)``, and after a retryable worker failure ``launch("auto")`` again — which
    resumes from the newest complete checkpoint set, or starts afresh when there is none — up
    to ``max_restarts`` times.  The last failure is raised when restarts are used up."""
    restarts: list[dict[str, Any]] = []
    while True:
        started = time.monotonic()
        try:
            result = launch(resume)
        except WorkerError as error:
            if not error.retryable or len(restarts) >= max_restarts:
                if error.retryable and max_restarts:
                    error.message += (
                        f"\n(gave up after {len(restarts)} restart(s): max_restarts={max_restarts})"
                    )
                raise
            restarts.append(
                {
                    "rank": error.rank,
                    "error": _first_line(error),
                    "detected_unix": time.time(),
                    "attempt_s": time.monotonic() - started,
                }
            )
            log.warning(
                "%s: %s after %.1f s; restart %d of %d from the newest complete checkpoint set",
                what,
                _first_line(error),
                time.monotonic() - started,
                len(restarts),
                max_restarts,
            )
            resume = "auto"
            continue
        if restarts and isinstance(result, dict):
            result["restarts"] = restarts  # the caller records them in summary.json
        return result


def _first_line(error: Any) -> str:
    text = str(error).strip().splitlines()
    return " ".join(text[:2]) if text else type(error).__name__
