"""The per-rank functions of the arms in ``registry.ARMS`` that need no extra library: serial
backprop (``serial``; ``serial-threads`` on K threads of one process and ``contention``, K
independent copies at once, both informational),
layer-parallel (``layerpar``), DDP (``ddp``) and ``torch.distributed.pipelining`` (``gpipe``,
``1f1b``).  ``deepspeed`` and ``layerpar-minimal`` live in their own modules.

Each runs inside one worker process of ``harness.run_arm`` (a CPU process with one thread, one
device, joined by gloo) and returns this rank's per-step wall times and the bytes it sent per
step.  Bytes are counted by wrapping torch.distributed's calls in this process
(``common.count_bytes``), not estimated from shapes.

A denoiser (``config.is_diffusion``) is called ``model(x_t, cond)`` on the runtime's batches and
loss (``common.batch_plan``, ``common.loss_fn``); the pipeline arms carry ``cond`` from stage to
stage (``pipeline_stages.py``).  ``*_step`` build an arm's step without timing it (for tests).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from layerpar.bench.breakdown import breakdown_per_step
from layerpar.bench.common import (
    Breakdown,
    Stash,
    StepTimes,
    arm_dtype,
    batch_plan,
    build_backbone,
    forward,
    loss_fn,
    record_cut,
    step_batch,
    time_steps,
)
from layerpar.config import RunConfig, replace
from layerpar.errors import ConfigError
from layerpar.parallel.optim import make_optimizer

Step = tuple[Callable[[int], None], nn.Module]
"""An arm's training step ``step(i)`` on this rank and the module it trains (tests compare
modules after the same steps of different arms)."""


def _counting_allreduce_hook(state, bucket):  # unannotated: DDP checks a hook's annotations at run time
    from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

    # The default all-reduce, but issued from Python, where ``count_bytes`` sees it.
    return allreduce_hook(state, bucket)


def serial_step(config: RunConfig, total_steps: int) -> Step:
    """Serial backprop's step: the whole global batch, one backward."""
    model = build_backbone(config)
    optimizer = make_optimizer(model.parameters(), config.optim, total_steps)[0]
    plan, loss, dtype = batch_plan(config), loss_fn(config), arm_dtype(config)

    def step(i: int) -> None:
        x, y, cond = step_batch(plan, i, dtype)
        optimizer.zero_grad(set_to_none=True)
        loss(forward(model, x, cond), y).backward()
        optimizer.step()

    return step, model


def arm_serial(config: RunConfig, warmup: int, steps: int, **_: Any) -> StepTimes:
    """Serial backprop on one device."""
    return time_steps(serial_step(config, warmup + steps)[0], warmup, steps)


def arm_serial_threads(config: RunConfig, warmup: int, steps: int, **kw: Any) -> StepTimes:
    """Informational: serial backprop in one process on K = ``parallel.stages`` threads."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        raise ConfigError(
            "serial-threads runs in one process (devices=1) with parallel.stages = K threads, "
            f"not in {dist.get_world_size()} processes"
        )
    torch.set_num_threads(config.parallel.stages)
    return arm_serial(config, warmup, steps, **kw)


def arm_serial_copies(config: RunConfig, warmup: int, steps: int, **kw: Any) -> StepTimes:
    """Informational: the serial step in every one of the K processes at once, with no
    communication.  Its step over serial's is how much K busy single-thread workers slow each
    other on this machine now: the cost model's contention, measured interleaved with the arms
    it corrects (``validate.run_clock``)."""
    return arm_serial(config, warmup, steps, **kw)


def arm_layerpar(
    config: RunConfig, warmup: int, steps: int, **_: Any
) -> tuple[list[float], int, Breakdown, Stash]:
    """Layer-parallel training (the config's method): this rank's step times, bytes per step,
    where its timed steps went (``breakdown.breakdown_per_step``) and the largest stash it held
    (``parallel/stash_meter.py``; zeros for a method without one)."""
    from layerpar.parallel.methods import micro_batches

    # The pipelined method feeds each step's batch in micro-batches, one loop step each.
    micro = micro_batches(config)
    metered = warmup + steps  # one more, untimed step measures the stash
    drain = (metered + 1) * micro  # one more, untimed loop step ends the run (stale methods)
    runner = layerpar_runner(config, drain + 1)
    program = runner.program(serial=False)
    clock, meter = runner.worker.clock, runner.worker.stash_meter

    def tick(t: int) -> None:
        with clock("batch"):
            runner.begin(t, config.layerpar.beta, final=t == drain)
        runner.run(program)
        runner.take_metrics()

    def step(i: int) -> None:
        if i == warmup:
            clock.start()  # the timed steps only
        for t in range(i * micro, (i + 1) * micro):
            tick(t)

    times, sent = time_steps(step, warmup, steps)
    seconds = clock.stop()
    # The stash is measured on a step after the timed ones (the pipeline is full by then): its
    # saved-tensor hooks cost a stashing module about a millisecond a micro-batch on the DiT, for
    # a diagnostic that training never runs, and that time is not layerpar's.
    meter.start()
    step(metered)
    stash = meter.stop()
    tick(drain)
    return times, sent, breakdown_per_step(seconds, times), stash.to_dict()


def layerpar_runner(config: RunConfig, total_steps: int) -> Any:
    """This rank's ``DistributedRunner`` as the ``layerpar`` arm builds it (also used by tests)."""
    from layerpar.parallel.comm import TorchDistComm
    from layerpar.parallel.layout import Layout
    from layerpar.parallel.methods import micro_batches
    from layerpar.parallel.runner import DistributedRunner
    from layerpar.parallel.setup import build_setup, distributed_bounds, make_worker

    config = replace(config, layerpar={"warmup_epochs": 0, "serial_final_epochs": 0})
    layout = Layout(config.parallel.stages, 1)
    comm = TorchDistComm(layout.groups())
    bounds = record_cut(distributed_bounds(config, comm))
    from layerpar.parallel.objective import objective_from

    # The runtime's own objective (a denoiser's MSE), as ``parallel/worker.py`` builds it.
    objective = objective_from(config.train.loss, denoiser=config.is_diffusion)
    setup = build_setup(config, torch.device("cpu"), bounds, objective=objective)
    worker = make_worker(setup, dist.get_rank(), comm, total_steps, own_copy=False)
    return DistributedRunner(worker, batch_plan(config, micro_batches(config)), comm)


def ddp_step(config: RunConfig, total_steps: int) -> Step:
    """DistributedDataParallel's step: this rank's shard of the global batch, gradients averaged."""
    from torch.nn.parallel import DistributedDataParallel

    ddp = DistributedDataParallel(build_backbone(config))
    ddp.register_comm_hook(dist.group.WORLD, _counting_allreduce_hook)
    optimizer = make_optimizer(ddp.parameters(), config.optim, total_steps)[0]
    plan, loss, dtype = batch_plan(config), loss_fn(config), arm_dtype(config)
    rank, world = dist.get_rank(), dist.get_world_size()

    def step(i: int) -> None:
        x, y, cond = step_batch(plan, i, dtype, rank, world)
        optimizer.zero_grad(set_to_none=True)
        loss(forward(ddp, x, cond), y).backward()
        optimizer.step()

    return step, ddp.module


def arm_ddp(config: RunConfig, warmup: int, steps: int, **_: Any) -> StepTimes:
    """DistributedDataParallel: every rank takes its share of each global batch."""
    return time_steps(ddp_step(config, warmup + steps)[0], warmup, steps)


def arm_pipeline(
    config: RunConfig, warmup: int, steps: int, *, schedule: str, microbatches: int, **_: Any
) -> StepTimes:
    """``torch.distributed.pipelining``: ``schedule`` gpipe or 1f1b over ``microbatches``, and
    where its timed steps went (``pipeline_clock.py``)."""
    from layerpar.bench.pipeline_clock import new_pipeline_clock, time_with_breakdown
    from layerpar.bench.pipeline_stages import pipeline_step

    clock = new_pipeline_clock()
    step = pipeline_step(config, warmup + steps, schedule, microbatches, clock)[0]
    return time_with_breakdown(step, clock, warmup, steps)
