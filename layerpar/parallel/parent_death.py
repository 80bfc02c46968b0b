"""A worker process that dies with its parent (the launcher that started it)."""

from __future__ import annotations

import ctypes
import os
import signal

PR_SET_PDEATHSIG = 1
DIE_WITH_PARENT_ENV = "LAYERPAR_DIE_WITH_PARENT"
"""Set by layerpar's launchers for the processes they start (not by Slurm or Ray, whose own
daemons own their workers)."""


def die_with_parent() -> None:
    """Ask the kernel to SIGKILL this process when its parent dies (Linux), so a driver that
    is killed — even by SIGKILL, where no cleanup code runs — leaves no worker training alone."""
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the driver's own cleanup has to do
        return
    if os.getppid() != parent:  # the parent died before the request was made
        os._exit(1)
