"""The exact pipeline schedules of ``torch.distributed.pipelining`` that hold two stages per
rank: interleaved 1F1B, interleaved zero-bubble, ZBV zero-bubble and DualPipeV.

The backbone is cut into 2K stages (same balance as the other arms, rank 0's cut broadcast).
Interleaved schedules give rank r the stages r and r + K (a loop); the V-shaped ones (ZBV,
DualPipeV) the stages r and 2K − 1 − r, so rank 0 holds both the first and the last stage.
A denoiser's stages carry its conditioning along (``pipeline_stages.py``); interleaved 1F1B
runs them.  In torch 2.13 the three schedules with a split weight backward (interleaved
zero-bubble, ZBV, DualPipeV: action ``W``) fail on them ("Trying to backward through the graph
a second time": the replicated embedder's path into the blocks does not pass through the
stage's input), so the registry refuses those three for denoisers (``ArmSpec.denoisers``).
Zero-bubble schedules split each backward into an input-gradient and a weight-gradient part
and fill the pipeline's bubbles with the latter (Qi et al., ICLR 2024).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

from layerpar.bench.common import StepTimes, build_backbone, loss_fn, record_cut
from layerpar.bench.pipeline_clock import clock_loss, clock_stages, new_pipeline_clock, time_with_breakdown
from layerpar.bench.pipeline_stages import stage_module, train_step
from layerpar.config import RunConfig, replace
from layerpar.parallel.setup import distributed_bounds

V_SHAPED = frozenset({"zbv", "dualpipev"})
SCHEDULES = ("interleaved1f1b", "interleavedzb", "zbv", "dualpipev")


def stage_ids(schedule: str, rank: int, world: int) -> tuple[int, int]:
    """The two (of 2K) stages rank ``rank`` holds under ``schedule``."""
    if schedule in V_SHAPED:
        return rank, 2 * world - 1 - rank
    return rank, rank + world


def _schedule_class(schedule: str) -> Any:
    from torch.distributed import pipelining

    return {
        "interleaved1f1b": pipelining.ScheduleInterleaved1F1B,
        "interleavedzb": pipelining.ScheduleInterleavedZeroBubble,
        "zbv": pipelining.ScheduleZBVZeroBubble,
        "dualpipev": pipelining.ScheduleDualPipeV,
    }[schedule]


def arm_multistage(
    config: RunConfig, warmup: int, steps: int, *, schedule: str, microbatches: int, **_: Any
) -> StepTimes:
    """``schedule`` over ``microbatches`` micro-batches, two stages per rank, and where its timed
    steps went (``pipeline_clock.py``)."""
    from torch.distributed.pipelining import PipelineStage

    from layerpar.parallel.comm import TorchDistComm

    rank, world = dist.get_rank(), dist.get_world_size()
    model = build_backbone(config)
    virtual = replace(config, parallel={"stages": 2 * world})
    bounds = record_cut(distributed_bounds(virtual, TorchDistComm()))
    ids = stage_ids(schedule, rank, world)
    modules = [model.slice(bounds[i], bounds[i + 1]) for i in ids]
    stages = [
        PipelineStage(stage_module(m, config, i == 2 * world - 1), i, 2 * world, torch.device("cpu"))
        for m, i in zip(modules, ids, strict=True)
    ]
    pipe = _schedule_class(schedule)(stages, n_microbatches=microbatches, loss_fn=loss_fn(config))
    first, last = any(s.is_first for s in stages), any(s.is_last for s in stages)
    clock = new_pipeline_clock()
    clock_stages(clock, stages)
    clock_loss(clock, pipe)
    step = train_step(config, warmup + steps, pipe, modules, first, last, clock)
    return time_with_breakdown(step, clock, warmup, steps)
