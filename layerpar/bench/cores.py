"""``layerpar bench --pin-cores``: "a device is one CPU core" (DESIGN.md §4), made literal with
CPU affinity.

Unpinned, the scheduler may move an arm's single-thread workers, and gloo's threads, between
cores, and now and then run two of them on one core.  Pinned, rank r of a K-process arm runs on
the r-th core this process may use, and its gloo threads run there too (a thread inherits the
affinity of the thread that starts it, and the process group starts after the pin); an arm of K
threads in one process (``serial-threads``) gets the first K cores.  Every arm of a run is pinned
alike (the serial baseline on the first core, the ``contention`` probe's copies one per core), so
the ratios between arms stay like for like.
"""

from __future__ import annotations

import os

from layerpar.errors import ConfigError


def usable_cores() -> list[int]:
    """The CPU cores this process may run on (its affinity, not the machine's count)."""
    return sorted(os.sched_getaffinity(0))


def check_cores(devices: int) -> None:
    """Refuse an arm of more devices than there are cores to give each its own."""
    cores = usable_cores()
    if devices > len(cores):
        raise ConfigError(
            f"--pin-cores gives every device its own CPU core, but an arm here runs on {devices} devices "
            f"and this process may use {len(cores)} cores ({cores}): lower --stages to at most "
            f"{len(cores)}, or drop --pin-cores"
        )


def rank_cores(rank: int, threads: int) -> set[int]:
    """The cores of rank ``rank`` of an arm whose processes run ``threads`` threads each."""
    cores = usable_cores()
    return set(cores[rank * threads : (rank + 1) * threads])


def pin(rank: int, threads: int) -> None:
    """Pin this process (and the threads it starts from now on) to ``rank_cores``."""
    os.sched_setaffinity(0, rank_cores(rank, threads))
