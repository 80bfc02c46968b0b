"""Stages for ``torch.distributed.pipelining`` (the ``gpipe``/``1f1b`` arms and the two-stage-
per-rank schedules of ``multistage_arms.py``), for classifiers and denoisers alike.

``schedule.step(*args)`` feeds its arguments, cut into micro-batches, to the first stage only.
A denoiser's every module needs the conditioning of its own micro-batch (each embeds it
itself, ``models/backbone.py``), so a denoiser's stage is wrapped to carry it along:
the first and every middle stage map ``(h, cond) -> (h, cond)``, the last ``(h, cond) ->
prediction``.  Its few bytes per sample travel (and are counted) with the activation, and every
stage's embedder replica has its gradients summed over the ranks before the optimiser step
(``common.sum_replicated_grads``), which is serial backprop's gradient.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from layerpar.bench.common import (
    arm_dtype,
    batch_plan,
    broadcast_bounds,
    build_backbone,
    loss_fn,
    step_batch,
    sum_replicated_grads,
    unique_parameters,
)
from layerpar.bench.pipeline_clock import clock_loss, clock_stages, new_pipeline_clock
from layerpar.config import RunConfig
from layerpar.parallel.clock import PhaseClock
from layerpar.parallel.optim import make_optimizer


class CondStage(nn.Module):
    """A denoiser's stage that passes its micro-batch's conditioning on to the next stage."""

    def __init__(self, module: nn.Module, last: bool) -> None:
        super().__init__()
        self.module = module
        self.last = last
        embedder = getattr(module, "embedder", None)
        self.num_classes: int | None = getattr(embedder, "num_classes", None)

    def forward(self, h: torch.Tensor, cond: torch.Tensor) -> Any:
        out = self.module(h, self._in_range(cond))
        # The next stage receives into a buffer laid out like this output; gloo receives only
        # into contiguous tensors (a DiT's patch embedding is a transposed view).
        return out if self.last else (out.contiguous(), cond)

    def _in_range(self, cond: torch.Tensor) -> torch.Tensor:
        """``cond`` with its class column clamped into the label table (the null class included).

        torch.distributed.pipelining infers a later stage's shapes by running it once on
        ``torch.empty`` buffers: an uninitialised class index then points outside the table and
        raises on that rank only, and the other rank waits for it until gloo times out.  A real
        conditioning's class is always in range, so the clamp changes nothing it carries."""
        if self.num_classes is None:
            return cond
        labels = cond[:, 1].nan_to_num(0.0).clamp(0, self.num_classes)
        return torch.stack([cond[:, 0], labels], dim=1)


def stage_module(module: nn.Module, config: RunConfig, last: bool) -> nn.Module:
    """``module`` as a pipeline stage: unchanged for a classifier, a ``CondStage`` for a denoiser."""
    return CondStage(module, last) if config.is_diffusion else module


def pipe_step(
    pipe: Any, first: bool, last: bool, x: torch.Tensor, y: torch.Tensor, cond: torch.Tensor | None
) -> None:
    """One ``schedule.step``: inputs (and a denoiser's conditioning) to the rank holding the first
    stage, targets to the rank holding the last."""
    inputs = (x,) if cond is None else (x, cond)
    pipe.step(*(inputs if first else ()), **({"target": y} if last else {}))


def pipeline_step(
    config: RunConfig, total_steps: int, schedule: str, microbatches: int, clock: PhaseClock | None = None
) -> tuple[Any, nn.Module]:
    """This rank's step of ``schedule`` (gpipe or 1f1b) over ``microbatches``, and its module
    (``clock``: where the step's time goes, ``pipeline_clock.py``)."""
    from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe

    rank, world = dist.get_rank(), dist.get_world_size()
    bounds = broadcast_bounds(config)
    module = build_backbone(config).slice(bounds[rank], bounds[rank + 1])
    last = rank == world - 1
    stage = PipelineStage(stage_module(module, config, last), rank, world, torch.device("cpu"))
    cls = ScheduleGPipe if schedule == "gpipe" else Schedule1F1B
    pipe = cls(stage, n_microbatches=microbatches, loss_fn=loss_fn(config))
    clock = clock or new_pipeline_clock()
    clock_stages(clock, [stage])
    clock_loss(clock, pipe)
    step = train_step(config, total_steps, pipe, [module], rank == 0, last, clock)
    return step, module


def train_step(
    config: RunConfig,
    total_steps: int,
    pipe: Any,
    modules: Sequence[nn.Module],
    first: bool,
    last: bool,
    clock: PhaseClock,
) -> Any:
    """The optimiser step around ``pipe``: zero, the schedule, the embedder's sum, update (each
    part timed on ``clock`` while it runs)."""
    optimizer = make_optimizer(unique_parameters(modules), config.optim, total_steps)[0]
    plan, dtype = batch_plan(config), arm_dtype(config)

    def step(i: int) -> None:
        with clock("batch"):
            x, y, cond = step_batch(plan, i, dtype)
        optimizer.zero_grad(set_to_none=True)
        pipe_step(pipe, first, last, x, y, cond)
        with clock("embedder sum"):
            sum_replicated_grads(modules)
        with clock("optimizer"):
            optimizer.step()

    return step
