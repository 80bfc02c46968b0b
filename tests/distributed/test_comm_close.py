"""Closing the process group leaves no gloo thread behind, even when a reference cycle holds the
comm, its sub-groups and unwaited send handles (as workers and links do).

A gloo thread alive at interpreter exit aborted a rank under mpirun ("terminate called without
an active exception"); two real gloo processes show the close takes every such thread down."""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
from typing import Any

import pytest
import torch

from layerpar.launchers.env import contract, free_port

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="counts threads in /proc")


def _threads() -> int:
    return len(os.listdir("/proc/self/task"))


def _rank(rank: int, port: int, results: Any) -> None:
    try:
        results.put(_count_threads(rank, port))
    except BaseException as error:  # noqa: BLE001 - the test reads the failure
        results.put((rank, repr(error), None, None))


def _count_threads(rank: int, port: int) -> tuple[int, int, int, int]:
    from layerpar.parallel.comm import TorchDistComm, close_process_group, init_process_group

    os.environ.update(contract("127.0.0.1", port, rank, 2, rank))
    torch.set_num_threads(1)
    torch.ones(1).add_(1)  # start what torch starts on first use before counting
    before = _threads()
    init_process_group("gloo", timeout_s=60)
    comm = TorchDistComm([(0,), (1,), (0, 1)])  # one-rank sub-groups: groups of their own
    cycle: dict[str, Any] = {"comm": comm}
    cycle["self"] = cycle
    if rank == 0:
        cycle["sends"] = [comm.isend(torch.ones(4), 1)]  # never waited
    else:
        comm.recv((4,), 0, torch.float32, torch.device("cpu"))
    comm.all_reduce(torch.ones(2), (0, 1)).wait()
    during = _threads()
    del comm, cycle
    close_process_group()
    return rank, before, during, _threads()


@pytest.mark.timeout(120)
def test_close_stops_every_gloo_thread_held_by_a_cycle() -> None:
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=_rank, args=(rank, port, results)) for rank in range(2)]
    for proc in procs:
        proc.start()
    counts = sorted(results.get(timeout=100) for _ in procs)
    for proc in procs:
        proc.join(timeout=30)
        assert proc.exitcode == 0
    for rank, before, during, after in counts:
        assert during is not None, f"rank {rank} failed: {before}"
        assert during > before, f"rank {rank}: gloo started no thread? ({before} -> {during})"
        assert after == before, f"rank {rank}: {after - before} thread(s) outlived the close"
