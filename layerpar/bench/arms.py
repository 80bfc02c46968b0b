"""One function per benchmark arm, run inside each worker process (one thread = one device).

Each returns this rank's per-step wall times and the bytes it sent per step.  Bytes are counted
by wrapping torch.distributed's point-to-point and collective calls in this process, not
estimated from shapes.
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
    """Count every payload this process hands to the default process group (send, all-reduce).

    torch.distributed's Python functions and pipelining call these methods; DDP's reducer calls
    C++ directly, so ``arm_ddp`` routes its buckets through a Python communication hook.
    """
    world = dist.get_world_size()
    ring = 2 * (world - 1) / world  # a ring all-reduce sends 2(n-1)/n of the tensor per rank
    pg_cls = type(dist.distributed_c10d._get_default_group())
    for name, factor in (("allreduce", ring), ("send", 1.0)):
        original = getattr(pg_cls, name)

        def counted(self: Any, tensors: Any, *args: Any, _orig: Any = original, _f: float = factor, **kw: Any) -> Any:
            for t in tensors if isinstance(tensors, (list, tuple)) else [tensors]:
                _BYTES["sent"] += int(_f * t.numel() * t.element_size())
            return _orig(self, tensors, *args, **kw)

        setattr(pg_cls, name, counted)


def _counting_allreduce_hook(state, bucket):  # type: ignore[no-untyped-def]  # DDP inspects annotations
    from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

    # The default all-reduce, but issued from Python, where ``count_bytes`` sees it.
    return allreduce_hook(state, bucket)


def _plan(config: RunConfig) -> BatchPlan:
    train = load_dataset(config.data.dataset, "train", cache_dir=config.data.cache_dir, limit=config.data.train_limit)
    return BatchPlan(train, config.train.batch_size, config.train.seed, crop_pad=config.data.crop_pad, flip=config.data.flip)


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


def arm_layerpar(config: RunConfig, warmup: int, steps: int, **_: Any) -> tuple[list[float], int]:
    from layerpar.parallel.comm import TorchDistComm
    from layerpar.parallel.layout import Layout
    from layerpar.parallel.runner import DistributedRunner
    from layerpar.parallel.setup import build_setup, make_worker
    from layerpar.parallel.stage import PARALLEL_PROGRAM

    config = replace(config, layerpar={"warmup_epochs": 0, "serial_final_epochs": 0})
    layout = Layout(config.parallel.stages, 1)
    comm = TorchDistComm(layout.groups())
    bounds = comm.broadcast_object(_bounds(config) if dist.get_rank() == 0 else None, src=0)
    setup = build_setup(config, torch.device("cpu"), tuple(bounds))
    worker = make_worker(setup, dist.get_rank(), comm, warmup + steps, own_copy=False)
    runner = DistributedRunner(worker, _plan(config), comm)

    def step(i: int) -> None:
        runner.begin(i, config.layerpar.beta)
        runner.run(PARALLEL_PROGRAM)
        runner.take_metrics()

    return _timed(step, warmup, steps)


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
    model, input_shape, _ = build_model_for(config)
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


ARM_FUNCTIONS: dict[str, Callable[..., tuple[list[float], int]]] = {
    "serial": arm_serial,
    "layerpar": arm_layerpar,
    "ddp": arm_ddp,
    "gpipe": lambda c, w, s, **kw: arm_pipeline(c, w, s, schedule="gpipe", **kw),
    "1f1b": lambda c, w, s, **kw: arm_pipeline(c, w, s, schedule="1f1b", **kw),
}
