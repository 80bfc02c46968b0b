"""What the bench arms and reports share: byte counting, an arm's batches and cut points, the
timing loop, the timing-sized config, devices, and ``summary.json``.

Imports nothing else from ``layerpar.bench`` (every arm module and report imports this one).
"""

from __future__ import annotations

import json
import platform
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from layerpar.config import RunConfig, replace
from layerpar.data import load_dataset
from layerpar.errors import ConfigError
from layerpar.parallel.batches import BatchPlan

Timed = tuple[list[float], int]
"""Per-step wall seconds and the bytes this rank sent per step."""
Breakdown = dict[str, float]
"""Milliseconds per step in each part of a step (``breakdown.breakdown_per_step``)."""
Stash = dict[str, int]
"""The largest stash a rank held (``parallel/stash_meter.StashSize.to_dict``)."""
StepTimes = Timed | tuple[list[float], int, Breakdown, Stash | None]
"""What an arm returns on each rank: its per-step wall seconds and the bytes it sent per step
(the ``layerpar`` and pipeline arms: and where its steps went; ``layerpar``: its largest stash)."""

# --------------------------------------------------------------------------------------------
# Bytes sent, counted in this process

_SENT = {"bytes": 0}


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

        def counted(
            self: Any, tensors: Any, *args: Any, _orig: Any = original, _f: Any = factor, **kw: Any
        ) -> Any:
            share = _f(self)
            for t in tensors if isinstance(tensors, (list, tuple)) else [tensors]:
                add_sent_bytes(int(share * t.numel() * t.element_size()))
            return _orig(self, tensors, *args, **kw)

        setattr(pg_cls, name, counted)


def add_sent_bytes(nbytes: int) -> None:
    """Charge ``nbytes`` to this process (for calls ``count_bytes`` does not wrap)."""
    _SENT["bytes"] += nbytes


def sent_bytes() -> int:
    """Bytes this process has sent since ``count_bytes``."""
    return _SENT["bytes"]


# --------------------------------------------------------------------------------------------
# What every arm builds the same way


def batch_plan(config: RunConfig, micro: int = 1) -> BatchPlan:
    """The training batches of ``config`` (each in ``micro`` micro-batches).

    A denoiser's are the runtime's own (``load_run_data``: x₀ rescaled, then (x_t, target) and
    the conditioning drawn from the step seed), so every arm trains on what ``layerpar`` trains on."""
    data = config.data
    if config.is_diffusion:
        from layerpar.parallel.run import load_run_data

        plan = load_run_data(config).plan
        if plan.micro == micro:
            return plan
        return BatchPlan(
            plan.dataset,
            plan.batch_size,
            plan.seed,
            crop_pad=data.crop_pad,
            flip=data.flip,
            micro=micro,
            noise=plan.noise,
        )
    train = load_dataset(data.dataset, "train", cache_dir=data.cache_dir, limit=data.train_limit)
    return BatchPlan(
        train, config.train.batch_size, config.train.seed, crop_pad=data.crop_pad, flip=data.flip, micro=micro
    )


Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]
"""(inputs, targets, conditioning or None) of one step's shard, in the arm's dtype."""


def step_batch(plan: BatchPlan, step: int, dtype: torch.dtype, replica: int = 0, replicas: int = 1) -> Batch:
    """``plan``'s shard of ``step`` cast to ``dtype`` (class labels stay integers)."""
    x, y = plan.batch(step, replica, replicas)
    cond = plan.cond(step, replica, replicas)
    y = y.to(dtype) if y.is_floating_point() else y
    return x.to(dtype), y, None if cond is None else cond.to(dtype)


def forward(model: Callable[..., torch.Tensor], x: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
    """``model(x)``, or a denoiser's ``model(x_t, cond)``."""
    return model(x) if cond is None else model(x, cond)


def loss_fn(config: RunConfig) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The loss every arm trains on: the runtime's (cross-entropy for a classifier, a denoiser's
    MSE on its ε or velocity, or ``train.loss``), so the arms and ``layerpar`` optimise the same."""
    from layerpar.parallel.objective import objective_from

    return objective_from(config.train.loss, denoiser=config.is_diffusion).loss


def arm_dtype(config: RunConfig) -> torch.dtype:
    """``train.dtype`` (float32 unless set; float64 lets tests compare arms exactly)."""
    from layerpar.parallel.setup import torch_dtype

    return torch_dtype(config.train.dtype)


def build_backbone(config: RunConfig) -> Any:
    """The config's backbone, seeded as the runtime builds it, in ``train.dtype``."""
    from layerpar.parallel.setup import build_model_for

    return build_model_for(config)[0].to(arm_dtype(config))


def sum_replicated_grads(modules: Iterable[torch.nn.Module]) -> None:
    """Sum a split denoiser's embedder gradients over its replicas, on this rank and every other
    (each stage holds a replica and backpropagates only its own blocks into it; serial
    backprop's gradient is the sum), as the runtime's ``ReplicatedSync`` does.  Modules sharing
    one embedder count once.  A no-op for classifiers (no embedder)."""
    from layerpar.parallel.flat import flat_grads, set_flat_grads
    from layerpar.parallel.replicated import replicated_parameters

    groups = {id(g[0]): g for g in (replicated_parameters(m) for m in modules) if g}
    if not groups:
        return
    bucket = torch.stack([flat_grads(g) for g in groups.values()]).sum(0)
    dist.all_reduce(bucket)
    for group in groups.values():
        set_flat_grads(group, bucket)


def unique_parameters(modules: Iterable[torch.nn.Module]) -> list[torch.nn.Parameter]:
    """The parameters of ``modules``, each once (slices of one denoiser share its embedder)."""
    return list({id(p): p for m in modules for p in m.parameters()}.values())


def stage_bounds(config: RunConfig) -> tuple[int, ...]:
    """The runtime's cut points of ``config``'s backbone into ``parallel.stages`` stages."""
    from layerpar.parallel.setup import build_model_for, choose_bounds

    model, input_shape, _ = build_model_for(config)
    return tuple(choose_bounds(config, model, input_shape))


def broadcast_bounds(config: RunConfig) -> tuple[int, ...]:
    """Rank 0's ``stage_bounds``, on every rank (a ``time`` cut may differ between processes):
    the runtime's own ``distributed_bounds``, over this process group (and recorded)."""
    from layerpar.parallel.comm import TorchDistComm
    from layerpar.parallel.setup import distributed_bounds

    return record_cut(distributed_bounds(config, TorchDistComm()))


_CUT: dict[str, tuple[int, ...] | None] = {"bounds": None}


def record_cut(bounds: Sequence[int]) -> tuple[int, ...]:
    """Note the cut this process's arm runs (its block bounds) and return it.  A ``time``
    balance measures the blocks when the arm starts, so two runs can cut differently; the
    harness puts each run's cut in ``summary.json`` and the cost model validates against it."""
    cut = tuple(int(b) for b in bounds)
    _CUT["bounds"] = cut
    return cut


def recorded_cut() -> tuple[int, ...] | None:
    """The cut ``record_cut`` noted in this process (None: the arm cuts nothing)."""
    return _CUT["bounds"]


def spawn_ranks(
    target: Callable[..., None], world: int, args: tuple[Any, ...], timeout_s: float
) -> tuple[str, Any]:
    """Run ``target(rank, world, port, *args, queue)`` in ``world`` spawned processes joined on a
    free loopback port; the first ``(status, payload)`` one of them puts on the queue (rank 0's
    result, or any rank's error).  Stragglers are terminated after 30 s."""
    import multiprocessing as mp

    from layerpar.launchers.env import free_port

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=target, args=(r, world, port, *args, queue)) for r in range(world)]
    for proc in procs:
        proc.start()
    try:
        return queue.get(timeout=timeout_s)
    finally:
        for proc in procs:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.terminate()


def time_steps(step_fn: Callable[[int], None], warmup: int, steps: int) -> Timed:
    """Run ``warmup`` untimed steps, a barrier, then ``steps`` timed ones: (seconds per step,
    bytes this rank sent per timed step)."""
    for step in range(warmup):
        step_fn(step)
    if dist.is_initialized():
        dist.barrier()
    before = sent_bytes()
    times = []
    for step in range(warmup, warmup + steps):
        start = time.perf_counter()
        step_fn(step)
        times.append(time.perf_counter() - start)
    return times, (sent_bytes() - before) // max(steps, 1)


def timing_config(config: RunConfig, warmup: int, steps: int) -> RunConfig:
    """``config`` with ``data.train_limit`` cut to the batches ``warmup + steps`` timed steps draw
    (never above the preset's own limit, never below one batch)."""
    batch = config.train.batch_size
    needed = (warmup + steps) * batch
    limit = min(needed, config.data.train_limit or needed)
    return replace(config, data={"train_limit": max(limit, batch)})


# --------------------------------------------------------------------------------------------
# Devices


def pick_device(name: str | None) -> torch.device:
    """``cuda`` (or None / ``auto`` with a GPU present) or ``cpu``; a missing GPU is a clear error."""
    if name in (None, "auto"):
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "--device cuda: no CUDA device is visible here; use --device cpu or run on a GPU machine"
        )
    if name not in ("cpu", "cuda"):
        raise ConfigError(f"--device {name!r}: valid devices are cpu, cuda, auto")
    return torch.device(name)


def synchronizer(device: torch.device) -> Callable[[], None]:
    """A function that waits for ``device`` (a no-op on the CPU)."""
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def describe_device(device: torch.device) -> str:
    """``cuda: <name>`` or ``cpu: <model name>, 1 thread`` (the bench's device)."""
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"cpu: {cpu}, 1 thread"


# --------------------------------------------------------------------------------------------
# Results


def median_iqr(values: Sequence[float]) -> tuple[float, float]:
    """Median and interquartile range (0 for one value)."""
    ordered = sorted(values)
    q = statistics.quantiles(ordered, n=4) if len(ordered) >= 2 else [ordered[0]] * 3
    return statistics.median(ordered), q[2] - q[0]


def markdown_table(columns: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """The lines of a Markdown table."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return lines + ["| " + " | ".join(cells) + " |" for cells in rows]


def write_summary(
    out: Path, command: str, rows: Sequence[dict[str, Any]], skipped: Sequence[str] = ()
) -> None:
    """``out/summary.json``: the reproducing command, one object per arm, K (and M), and the
    arm/M pairs a schedule cannot run."""
    record: dict[str, Any] = {"command": command, "results": list(rows)}
    if skipped:
        record["skipped"] = list(skipped)
    (out / "summary.json").write_text(json.dumps(record, indent=2) + "\n")
