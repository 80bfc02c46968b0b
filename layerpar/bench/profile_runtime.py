"""The cost of torch's pipeline runtime itself, per schedule, K and M: what a per-block profile
cannot see.

The per-block profile times each block's forward and backward with plain autograd.  A
``torch.distributed.pipelining`` schedule runs the same work through its runtime: it cuts the
batch into micro-batches, posts and checks actions, keeps every micro-batch's graph alive until
its backward (all M of them in GPipe), and in the zero-bubble schedules splits each backward
into an input-gradient pass and a weight-gradient pass through autograd.  On a slow CPU that
costs milliseconds per step, and more the more actions a rank runs (the two-stages-per-rank
schedules run 4M or 6M of them).

``measure_runtime_overhead`` measures it on one rank's share of the model: the first rank's
blocks of the K-rank cut (one stage for GPipe/1F1B; for the two-stages-per-rank schedules the
first two of the 2K stages), run by the schedule on a world of one process (torch passes
activations between two stages of one rank without messages), against the same forward and
backward over the same M micro-batches without the runtime.  Messages between ranks are the
link model's, not this.  Rounds alternate the two, so drift hits both alike; the difference of
the medians is stored per step (``Profile.runtime``) and the cost model spreads it over the
rank's actions.  It needs a process group of its own: when one is already initialised (inside a
distributed job), nothing is measured.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from layerpar.bench.profile import Profile, RuntimeOverhead, partition_bounds
from layerpar.bench.profile_timing import median

SINGLE_STAGE = ("gpipe", "1f1b")
TWO_STAGE = ("interleaved1f1b", "interleavedzb", "zbv", "dualpipev")
SCHEDULES = SINGLE_STAGE + TWO_STAGE


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


def rank_share(profile: Profile, schedule: str, stages: int) -> tuple[int, ...] | None:
    """Block cut points of the first rank's local stages under ``schedule`` on ``stages`` ranks
    (None: the backbone cannot be cut that finely)."""
    local = 2 if schedule in TWO_STAGE else 1
    bounds = partition_bounds(profile, local * stages)
    return None if bounds is None else tuple(bounds[: local + 1])


def _feature_loss(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """A loss on a share's output features (the share rarely ends in the logits)."""
    del target
    return out.float().pow(2).mean()


def _alternate(first: Callable[[], None], second: Callable[[], None], repeats: int, rounds: int) -> float:
    """median(first) − median(second), seconds, timed in alternating rounds after a warm-up."""
    first()
    second()
    a: list[float] = []
    b: list[float] = []
    for _ in range(rounds):
        for fn, out in ((first, a), (second, b)):
            for _ in range(repeats):
                start = time.perf_counter()
                fn()
                out.append(time.perf_counter() - start)
    return median(a) - median(b)


def _overhead(
    schedule: str,
    modules: Sequence[nn.Module],
    x: torch.Tensor,
    microbatches: int,
    repeats: int,
    rounds: int,
) -> float:
    from torch.distributed.pipelining import PipelineStage

    count = len(modules)
    stages = [PipelineStage(m, i, count, x.device) for i, m in enumerate(modules)]
    pipe = _schedule_class(schedule)(
        stages if schedule in TWO_STAGE else stages[0], n_microbatches=microbatches, loss_fn=_feature_loss
    )
    target = torch.zeros(x.shape[0], device=x.device)
    chain = nn.Sequential(*modules)

    def with_runtime() -> None:
        pipe.step(x, target=target, return_outputs=False)  # a real rank saves logits at most
        chain.zero_grad(set_to_none=True)

    def plain() -> None:
        for micro in x.chunk(microbatches):
            _feature_loss(chain(micro), target).backward()
        chain.zero_grad(set_to_none=True)

    return _alternate(with_runtime, plain, repeats, rounds)


def measure_runtime_overhead(
    profile: Profile,
    model: Any,
    *,
    schedules: Iterable[str],
    stages: Iterable[int],
    microbatches: Iterable[int],
    repeats: int = 5,
    rounds: int = 3,
) -> tuple[RuntimeOverhead, ...]:
    """``RuntimeOverhead`` of every schedule × K × M that fits (module docstring).  ``model`` is
    the profiled backbone (its state is the caller's to restore); CPU, one thread."""
    wanted = [s for s in schedules if s in SCHEDULES]
    if not wanted or dist.is_initialized():
        return ()
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        rows = []
        for k in sorted(set(stages)):
            for schedule in wanted:
                share = rank_share(profile, schedule, k)
                if k < 2 or share is None:
                    continue
                modules = [model.slice(a, b) for a, b in zip(share, share[1:])]
                dtype = next(model.parameters()).dtype
                x = torch.randn(profile.batch_size, *profile.input_shape, dtype=dtype)
                for m in sorted(set(microbatches)):
                    if m < 1 or profile.batch_size < m or (schedule == "dualpipev" and m < 2 * k):
                        continue
                    seconds = _overhead(schedule, modules, x, m, repeats, rounds)
                    rows.append(RuntimeOverhead(schedule, k, m, seconds))
        return tuple(rows)
    finally:
        dist.destroy_process_group()
