"""One function per benchmark arm, run inside each worker process (one thread = one device).

Each returns this rank's per-step wall times and the bytes it sent per step.  Bytes are counted
by wrapping torch.distributed's point-to-point and collective calls in this process, not
estimated from shapes.  ``deepspeed`` (DeepSpeed PipelineModule) and ``layerpar-minimal`` (the
layerpar step as a plain torch.distributed loop, to measure framework overhead) live in their
own modules; ``serial-threads`` is serial backprop on K threads of one process (informational).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
from torch.nn import functional as F

from layerpar.config import RunConfig, replace
from layerpar.data import load_dataset
from layerpar.parallel.batches import BatchPlan

_BYTES = {"sent": 0}


def count_bytes() -> None:
    """Count every payload this process hands to a process group (send, all-reduce).

    torch.distributed's Python functions and pipelining call these methods; DDP's reducer calls
    C++ directly, so ``arm_ddp`` routes its buckets through a Python communication hook.  An
    all-reduce is charged 2(n-1)/n of its tensor, n the size of *its* group (a one-rank group,
    such as DeepSpeed's data-parallel group at one replica, sends nothing).
    """
    pg_cls = type(dist.distributed_c10d._get_default_group())

    def ring(group: Any) -> float:
        return 2 * (group.size() - 1) / group.size()  # a ring all-reduce sends 2(n-1)/n per rank

    def whole(group: Any) -> float:
        return 1.0

    for name, factor in (("allreduce", ring), ("send", whole)):
        original = getattr(pg_cls, name)

        def counted(self: Any, tensors: Any, *args: Any, _orig: Any = original, _f: Any = factor, **kw: Any) -> Any:
            share = _f(self)
            for t in tensors if isinstance(tensors, (list, tuple)) else [tensors]:
                _BYTES["sent"] += int(share * t.numel() * t.element_size())
            return _orig(self, tensors, *args, **kw)

        setattr(pg_cls, name, counted)


def _counting_allreduce_hook(state, bucket):  # type: ignore[no-untyped-def]  # DDP inspects annotations
    from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

    # The default all-reduce, but issued from Python, where ``count_bytes`` sees it.
    return allreduce_hook(state, bucket)


def _plan(config: RunConfig, micro: int = 1) -> BatchPlan:
    train = load_dataset(config.data.dataset, "train", cache_dir=config.data.cache_dir, limit=config.data.train_limit)
    return BatchPlan(train, config.train.batch_size, config.train.seed, crop_pad=config.data.crop_pad,
                     flip=config.data.flip, micro=micro)


def _timed(step_fn: Callable[[int], None], warmup: int, steps: int) -> tuple[list[float], int]:
    for step in range(warmup):
        step_fn(step)
    if dist.is_initialized():
        dist.barrier()
    before = _BYTES["sent"]
    times = []
    for step in range(warmup, warmup + steps):
        start = time.perf_counter()
        step_fn(step)
        times.append(time.perf_counter() - start)
    return times, (_BYTES["sent"] - before) // max(steps, 1)


def arm_serial(config: RunConfig, warmup: int, steps: int, **_: Any) -> tuple[list[float], int]:
    from layerpar.parallel.optim import make_optimizer
    from layerpar.parallel.setup import build_model_for

    model, _, _ = build_model_for(config)
    optimizer, _ = make_optimizer(model.parameters(), config.optim, warmup + steps)
    plan = _plan(config)

    def step(i: int) -> None:
        x, y = plan.batch(i)
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        optimizer.step()

    return _timed(step, warmup, steps)


def arm_serial_threads(config: RunConfig, warmup: int, steps: int, **kw: Any) -> tuple[list[float], int]:
    """Informational: serial backprop in one process on K = ``parallel.stages`` threads."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        from layerpar.errors import ConfigError

        raise ConfigError("serial-threads runs in one process (devices=1) with parallel.stages = K threads, "
                          f"not in {dist.get_world_size()} processes")
    torch.set_num_threads(config.parallel.stages)
    return arm_serial(config, warmup, steps, **kw)


def arm_layerpar(config: RunConfig, warmup: int, steps: int, **_: Any) -> tuple[list[float], int]:
    from layerpar.parallel.stage import PARALLEL_PROGRAM

    # The pipelined method feeds each step's batch in micro-batches, one loop step each.
    micro = config.micro_batches
    drain = (warmup + steps) * micro  # one more, untimed loop step ends the run (stale methods)
    runner = layerpar_runner(config, drain + 1)

    def tick(t: int) -> None:
        runner.begin(t, config.layerpar.beta, final_parallel=t == drain)
        runner.run(PARALLEL_PROGRAM)
        runner.take_metrics()

    def step(i: int) -> None:
        for t in range(i * micro, (i + 1) * micro):
            tick(t)

    timed = _timed(step, warmup, steps)
    tick(drain)
    return timed


def layerpar_runner(config: RunConfig, total_steps: int) -> Any:
    """This rank's ``DistributedRunner`` as the ``layerpar`` arm builds it (also used by tests)."""
    from layerpar.parallel.comm import TorchDistComm
    from layerpar.parallel.layout import Layout
    from layerpar.parallel.runner import DistributedRunner
    from layerpar.parallel.setup import build_setup, make_worker

    config = replace(config, layerpar={"warmup_epochs": 0, "serial_final_epochs": 0})
    layout = Layout(config.parallel.stages, 1)
    comm = TorchDistComm(layout.groups())
    bounds = comm.broadcast_object(_bounds(config) if dist.get_rank() == 0 else None, src=0)
    setup = build_setup(config, torch.device("cpu"), tuple(bounds))
    worker = make_worker(setup, dist.get_rank(), comm, total_steps, own_copy=False)
    return DistributedRunner(worker, _plan(config, config.micro_batches), comm)


def _bounds(config: RunConfig) -> tuple[int, ...]:
    from layerpar.parallel.setup import build_model_for, choose_bounds

    model, input_shape, _ = build_model_for(config)
    return choose_bounds(config, model, input_shape)


def arm_ddp(config: RunConfig, warmup: int, steps: int, **_: Any) -> tuple[list[float], int]:
    from torch.nn.parallel import DistributedDataParallel

    from layerpar.parallel.optim import make_optimizer
    from layerpar.parallel.setup import build_model_for

    model, _, _ = build_model_for(config)
    ddp = DistributedDataParallel(model)
    ddp.register_comm_hook(dist.group.WORLD, _counting_allreduce_hook)
    optimizer, _ = make_optimizer(ddp.parameters(), config.optim, warmup + steps)
    plan = _plan(config)
    rank, world = dist.get_rank(), dist.get_world_size()

    def step(i: int) -> None:
        x, y = plan.batch(i, rank, world)
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(ddp(x), y).backward()
        optimizer.step()

    return _timed(step, warmup, steps)


def arm_pipeline(config: RunConfig, warmup: int, steps: int, *, schedule: str, microbatches: int, **_: Any) -> tuple[list[float], int]:
    from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe

    from layerpar.parallel.optim import make_optimizer
    from layerpar.parallel.setup import build_model_for

    rank, world = dist.get_rank(), dist.get_world_size()
    model, _, _ = build_model_for(config)
    box = [_bounds(config) if rank == 0 else None]
    dist.broadcast_object_list(box, src=0)
    bounds = box[0]
    module = model.slice(bounds[rank], bounds[rank + 1])
    stage = PipelineStage(module, rank, world, torch.device("cpu"))
    cls = ScheduleGPipe if schedule == "gpipe" else Schedule1F1B
    pipe = cls(stage, n_microbatches=microbatches, loss_fn=F.cross_entropy)
    optimizer, _ = make_optimizer(module.parameters(), config.optim, warmup + steps)
    plan = _plan(config)

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

    return _timed(step, warmup, steps)


def arm_layerpar_minimal(config: RunConfig, warmup: int, steps: int, **kw: Any) -> tuple[list[float], int]:
    from layerpar.bench.minimal_arm import arm_layerpar_minimal as run

    return run(config, warmup, steps, **kw)


def arm_deepspeed(config: RunConfig, warmup: int, steps: int, **kw: Any) -> tuple[list[float], int]:
    from layerpar.bench.deepspeed_arm import arm_deepspeed as run

    return run(config, warmup, steps, **kw)


ARM_FUNCTIONS: dict[str, Callable[..., tuple[list[float], int]]] = {
    "serial": arm_serial,
    "layerpar": arm_layerpar,
    "ddp": arm_ddp,
    "gpipe": lambda c, w, s, **kw: arm_pipeline(c, w, s, schedule="gpipe", **kw),
    "1f1b": lambda c, w, s, **kw: arm_pipeline(c, w, s, schedule="1f1b", **kw),
    "deepspeed": arm_deepspeed,
    "serial-threads": arm_serial_threads,
    "layerpar-minimal": arm_layerpar_minimal,
}
