"""The per-rank functions of the arms in ``registry.ARMS`` that need no extra library: serial
backprop (``serial``, and ``serial-threads`` on K threads of one process, informational),
layer-parallel (``layerpar``), DDP (``ddp``) and ``torch.distributed.pipelining`` (``gpipe``,
``1f1b``).  ``deepspeed`` and ``layerpar-minimal`` live in their own modules.

Each runs inside one worker process of ``harness.run_arm`` (a CPU process with one thread, one
device, joined by gloo) and returns this rank's per-step wall times and the bytes it sent per
step.  Bytes are counted by wrapping torch.distributed's calls in this process
(``common.count_bytes``), not estimated from shapes.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch.nn import functional as F

from layerpar.bench.common import StepTimes, batch_plan, broadcast_bounds, time_steps
from layerpar.config import RunConfig, replace
from layerpar.errors import ConfigError
from layerpar.parallel.optim import make_optimizer
from layerpar.parallel.setup import build_model_for


def _counting_allreduce_hook(state, bucket):  # unannotated: DDP checks a hook's annotations at run time
    from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

    # The default all-reduce, but issued from Python, where ``count_bytes`` sees it.
    return allreduce_hook(state, bucket)


def arm_serial(config: RunConfig, warmup: int, steps: int, **_: Any) -> StepTimes:
    """Serial backprop on one device."""
    model = build_model_for(config)[0]
    optimizer = make_optimizer(model.parameters(), config.optim, warmup + steps)[0]
    plan = batch_plan(config)

    def step(i: int) -> None:
        x, y = plan.batch(i)
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        optimizer.step()

    return time_steps(step, warmup, steps)


def arm_serial_threads(config: RunConfig, warmup: int, steps: int, **kw: Any) -> StepTimes:
    """Informational: serial backprop in one process on K = ``parallel.stages`` threads."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        raise ConfigError(
            "serial-threads runs in one process (devices=1) with parallel.stages = K threads, "
            f"not in {dist.get_world_size()} processes"
        )
    torch.set_num_threads(config.parallel.stages)
    return arm_serial(config, warmup, steps, **kw)


def arm_layerpar(config: RunConfig, warmup: int, steps: int, **_: Any) -> tuple[list[float], int]:
    from layerpar.parallel.methods import micro_batches

    # The pipelined method feeds each step's batch in micro-batches, one loop step each.
    micro = micro_batches(config)
    drain = (warmup + steps) * micro  # one more, untimed loop step ends the run (stale methods)
    runner = layerpar_runner(config, drain + 1)
    program = runner.program(serial=False)

    def tick(t: int) -> None:
        runner.begin(t, config.layerpar.beta, final=t == drain)
        runner.run(program)
        runner.take_metrics()

    def step(i: int) -> None:
        for t in range(i * micro, (i + 1) * micro):
            tick(t)

    timed = time_steps(step, warmup, steps)
    tick(drain)
    return timed


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
    bounds = distributed_bounds(config, comm)
    setup = build_setup(config, torch.device("cpu"), bounds)
    worker = make_worker(setup, dist.get_rank(), comm, total_steps, own_copy=False)
    return DistributedRunner(worker, batch_plan(config, micro_batches(config)), comm)


def arm_ddp(config: RunConfig, warmup: int, steps: int, **_: Any) -> StepTimes:
    """DistributedDataParallel: every rank takes its share of each global batch."""
    from torch.nn.parallel import DistributedDataParallel

    ddp = DistributedDataParallel(build_model_for(config)[0])
    ddp.register_comm_hook(dist.group.WORLD, _counting_allreduce_hook)
    optimizer = make_optimizer(ddp.parameters(), config.optim, warmup + steps)[0]
    plan = batch_plan(config)
    rank, world = dist.get_rank(), dist.get_world_size()

    def step(i: int) -> None:
        x, y = plan.batch(i, rank, world)
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(ddp(x), y).backward()
        optimizer.step()

    return time_steps(step, warmup, steps)


def arm_pipeline(
    config: RunConfig, warmup: int, steps: int, *, schedule: str, microbatches: int, **_: Any
) -> StepTimes:
    """``torch.distributed.pipelining``: ``schedule`` gpipe or 1f1b over ``microbatches``."""
    from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe

    rank, world = dist.get_rank(), dist.get_world_size()
    model = build_model_for(config)[0]
    bounds = broadcast_bounds(config)
    module = model.slice(bounds[rank], bounds[rank + 1])
    stage = PipelineStage(module, rank, world, torch.device("cpu"))
    cls = ScheduleGPipe if schedule == "gpipe" else Schedule1F1B
    pipe = cls(stage, n_microbatches=microbatches, loss_fn=F.cross_entropy)
    optimizer = make_optimizer(module.parameters(), config.optim, warmup + steps)[0]
    plan = batch_plan(config)

    def step(i: int) -> None:
        x, y = plan.batch(i)
        optimizer.zero_grad(set_to_none=True)
        if rank == 0:
            pipe.step(x)
        elif rank == world - 1:
            pipe.step(target=y)
        else:
            pipe.step()
        optimizer.step()

    return time_steps(step, warmup, steps)
