"""The cost of torch's pipeline runtime itself, per schedule, K and M: what a per-block profile
cannot see.

The per-block profile times each block's forward and backward with plain autograd, and the
link model prices each message.  A ``torch.distributed.pipelining`` schedule also runs its
runtime between the actions on every rank: it cuts the batch into micro-batches, walks its
action list, posts and completes every point-to-point message, computes the loss, and checks
shapes.  The pipeline arms' breakdown (``pipeline_clock.py``) measures that time on the real
run as ``post p2p``, ``loss`` and ``other``: a few milliseconds a step for GPipe and 1F1B on
this CPU, several times that for the schedules with two stages per rank (4M or 6M actions).

``measure_runtime_overhead`` measures it in the profile, in K real processes joined by gloo,
each running the real schedule on *tiny* stages (an 8-wide linear layer on two samples per
micro-batch): the step time is then the runtime's own work and the messages' fixed costs, with
next to no compute and no bytes (the link model's bandwidth and the sender's copy are priced
apart).  The median step of rank 0 is stored per schedule, K and M (``Profile.runtime``), and
the cost model spreads it over a rank's actions.  CPU only; it spawns K processes once for all
the (schedule, M) pairs (a few seconds in all).
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from layerpar.bench.profile import RuntimeOverhead

SINGLE_STAGE = ("gpipe", "1f1b")
TWO_STAGE = ("interleaved1f1b", "interleavedzb", "zbv", "dualpipev")
SCHEDULES = SINGLE_STAGE + TWO_STAGE
WIDTH = 8
"""Features of a tiny stage (and of every message it sends)."""


def _schedule_class(schedule: str) -> Any:
    from torch.distributed import pipelining

    return {
        "gpipe": pipelining.ScheduleGPipe,
        "1f1b": pipelining.Schedule1F1B,
        "interleaved1f1b": pipelining.ScheduleInterleaved1F1B,
        "interleavedzb": pipelining.ScheduleInterleavedZeroBubble,
        "zbv": pipelining.ScheduleZBVZeroBubble,
        "dualpipev": pipelining.ScheduleDualPipeV,
    }[schedule]


def runs(schedule: str, ranks: int, microbatches: int) -> bool:
    """Whether torch runs ``schedule`` on ``ranks`` with ``microbatches`` (DualPipeV needs M ≥ 2K)."""
    return (
        schedule in SCHEDULES
        and ranks >= 2
        and microbatches >= 1
        and not (schedule == "dualpipev" and microbatches < 2 * ranks)
    )


def _tiny_loss(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    del target
    return out.pow(2).mean()


def _step_seconds(schedule: str, microbatches: int, steps: int) -> float:
    """Median seconds of one step of ``schedule`` on this rank's tiny stages (all ranks call it)."""
    from torch.distributed.pipelining import PipelineStage

    from layerpar.bench.multistage_arms import stage_ids

    rank, world = dist.get_rank(), dist.get_world_size()
    ids = stage_ids(schedule, rank, world) if schedule in TWO_STAGE else (rank,)
    count = world * len(ids)
    torch.manual_seed(0)
    stages = [PipelineStage(nn.Linear(WIDTH, WIDTH), i, count, torch.device("cpu")) for i in ids]
    pipe = _schedule_class(schedule)(
        stages if schedule in TWO_STAGE else stages[0], n_microbatches=microbatches, loss_fn=_tiny_loss
    )
    x, target = torch.randn(2 * microbatches, WIDTH), torch.zeros(2 * microbatches)
    first, last = any(s.is_first for s in stages), any(s.is_last for s in stages)

    def step() -> None:
        pipe.step(*((x,) if first else ()), **({"target": target} if last else {}))

    for _ in range(3):
        step()
    dist.barrier()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _probe_worker(
    rank: int, world: int, port: int, pairs: Sequence[tuple[str, int]], steps: int, out: Any
) -> None:
    from layerpar.launchers.env import contract

    os.environ.update(contract("127.0.0.1", port, rank, world, rank))
    torch.set_num_threads(1)
    try:
        dist.init_process_group("gloo")
        try:
            seconds = [_step_seconds(schedule, m, steps) for schedule, m in pairs]
        finally:
            dist.destroy_process_group()
        if rank == 0:
            out.put(("ok", seconds))
    except BaseException as error:  # noqa: BLE001
        out.put(("error", f"rank {rank}: {error!r}"))


def measure_runtime_overhead(
    *,
    schedules: Iterable[str],
    stages: Iterable[int],
    microbatches: Iterable[int],
    steps: int = 20,
    timeout_s: float = 300.0,
) -> tuple[RuntimeOverhead, ...]:
    """``RuntimeOverhead`` of every schedule × K × M that torch runs (module docstring).  Call it
    from code under ``if __name__ == "__main__":`` (it spawns K processes per K)."""
    from layerpar.bench.common import spawn_ranks

    rows: list[RuntimeOverhead] = []
    for k in sorted(set(stages)):
        pairs = [(s, m) for s in schedules for m in sorted(set(microbatches)) if runs(s, k, m)]
        if not pairs:
            continue
        status, payload = spawn_ranks(_probe_worker, k, (pairs, steps), timeout_s)
        if status != "ok":
            raise RuntimeError(f"the pipeline-runtime probe failed: {payload}")
        rows += [RuntimeOverhead(s, k, m, sec) for (s, m), sec in zip(pairs, payload, strict=True)]
    return tuple(rows)
