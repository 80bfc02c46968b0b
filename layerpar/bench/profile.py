"""A measured per-block profile of one run config: what the scaling model (``costmodel.py``) eats.

For every block of the backbone: forward and backward seconds (timed separately, at the global
batch and at smaller batches, so that micro-batches and data-parallel shards use *measured*
costs: on a CPU a block at batch B/M costs more than 1/M of the block at B), its output
activation bytes and its parameter bytes.  For every K: the AuxNet's forward and backward
seconds per boundary prefix.  Plus the optimiser cost per parameter byte, the elementwise cost of
a boundary's local loss, the batch preparation every rank repeats, and (optional) a measured
contention factor.

Everything is measured on one device: a GPU, or one CPU core (``torch.set_num_threads(1)``, the
benchmark's definition of a device).  Data are random tensors of the right shape (timing only).
BatchNorm buffers and parameters are restored afterwards.

Contention.  The profile is taken in one process, alone.  On a small shared machine (2 cores
here) K single-thread worker processes running at once slow each other down (shared memory
bandwidth and caches, hyper-threads, other users), which a single-process profile cannot see.
``measure_contention`` measures it rather than guessing it: the same stage timed alone, and
again while the other stage of a K = 2 cut runs in a second process.  The ratio is stored as the
explicit field ``Profile.contention`` (None when not measured) and the cost model multiplies the
compute of multi-device arms by it only when asked to.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing as mp
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from layerpar.bench.common import describe_device, synchronizer
from layerpar.config import RunConfig
from layerpar.parallel.partition import balanced_bounds

if TYPE_CHECKING:
    from layerpar.auxnet.network import AuxNet
    from layerpar.models.backbone import Backbone

# --------------------------------------------------------------------------------------------
# The profile


@dataclass(frozen=True)
class BlockTimes:
    """Median forward and backward seconds of every block at one batch size."""

    batch: int
    forward_s: tuple[float, ...]
    backward_s: tuple[float, ...]


@dataclass(frozen=True)
class AuxTimes:
    """The AuxNet built for K stages (cut at ``bounds``), timed at one batch size.

    ``prefix_forward_s[j]``: forward of the trunk prefix up to boundary j with its adapters (and
    multiplier heads), as ``AuxNet.forward(x, upto=j)`` runs it.  ``prefix_backward_s[j]``:
    backward of a loss on boundary j's prediction through that prefix (DESIGN.md §2, step 8).
    """

    stages: int
    batch: int
    bounds: tuple[int, ...]
    prefix_forward_s: tuple[float, ...]
    prefix_backward_s: tuple[float, ...]
    param_bytes: int


@dataclass(frozen=True)
class Profile:
    """Measured costs of one model, data shape and batch on one device (see module docstring)."""

    model: str
    dataset: str
    input_shape: tuple[int, ...]
    batch_size: int
    balance: str
    """The config's partition rule (blocks, params, time): the cost model cuts the same way."""
    device: str
    threads: int
    dtype: str
    block_names: tuple[str, ...]
    param_bytes: tuple[int, ...]
    """Per block."""
    param_counts: tuple[int, ...]
    activation_bytes: tuple[int, ...]
    """Per block: bytes of its output at ``batch_size`` (linear in the batch)."""
    timings: tuple[BlockTimes, ...]
    """Per measured batch size, ascending; other sizes are interpolated."""
    aux: tuple[AuxTimes, ...]
    sgd_s_per_byte: float
    """Main-network optimiser step (the config's SGD) seconds per parameter byte (rough)."""
    adam_s_per_byte: float
    """AuxNet optimiser step (Adam) seconds per parameter byte (rough)."""
    boundary_s_per_byte: float
    """Local loss forward+backward, adjoint scaling, AL targets and AuxNet loss at a boundary,
    seconds per byte of the boundary activation (elementwise work)."""
    batch_s: float
    """Preparing (indexing + augmenting) the global batch; every rank of every arm does it."""
    contention: float | None = None
    """Measured slowdown of one single-thread stage while another runs in a second process."""
    repeats: int = 5
    torch_version: str = ""
    method: str = "al"
    """The config's layerpar.method: the cost model predicts the layerpar arm for it."""
    accumulate: int | None = None
    """The config's layerpar.accumulate (pipelined method: micro-batches per step; None: auto)."""

    # ---------------------------------------------------------------- derived quantities

    @property
    def num_blocks(self) -> int:
        return len(self.block_names)

    def block_times(self, batch: float) -> tuple[list[float], list[float]]:
        """(forward, backward) seconds per block at ``batch``, interpolated linearly between the
        measured batch sizes (extrapolated from the two nearest beyond them, never below 0).

        A larger batch never costs less: each block's timings are first replaced by their
        running minimum from the largest batch down, which removes upward noise of small batches
        on a busy machine (the raw medians stay in ``timings``).
        """
        points = _monotone(sorted(self.timings, key=lambda t: t.batch))
        if not points:
            raise ValueError("profile has no block timings")
        for exact in points:
            if exact.batch == batch:
                return list(exact.forward_s), list(exact.backward_s)
        if len(points) == 1:
            scale = batch / points[0].batch
            return [f * scale for f in points[0].forward_s], [b * scale for b in points[0].backward_s]
        if batch <= points[0].batch:
            lo, hi = points[0], points[1]
        elif batch >= points[-1].batch:
            lo, hi = points[-2], points[-1]
        else:
            hi_index = next(i for i, p in enumerate(points) if p.batch > batch)
            lo, hi = points[hi_index - 1], points[hi_index]
        w = (batch - lo.batch) / (hi.batch - lo.batch)

        def mix(a: Sequence[float], b: Sequence[float]) -> list[float]:
            return [max(0.0, x + w * (y - x)) for x, y in zip(a, b)]

        return mix(lo.forward_s, hi.forward_s), mix(lo.backward_s, hi.backward_s)

    def activation_bytes_at(self, batch: float) -> list[float]:
        return [a * batch / self.batch_size for a in self.activation_bytes]

    def aux_times(self, stages: int, batch: int) -> AuxTimes:
        """The AuxNet timings for ``stages`` at ``batch`` (measured, or rescaled from the
        nearest measured batch when only another batch was profiled for this K)."""
        same_k = [a for a in self.aux if a.stages == stages]
        for a in same_k:
            if a.batch == batch:
                return a
        if not same_k:
            measured = sorted({a.stages for a in self.aux})
            raise KeyError(
                f"profile has no AuxNet timings for K={stages} (measured: {measured}); "
                f"profile again with stages including {stages}"
            )
        near = min(same_k, key=lambda a: abs(a.batch - batch))
        scale = batch / near.batch
        return dataclasses.replace(
            near,
            batch=batch,
            prefix_forward_s=tuple(t * scale for t in near.prefix_forward_s),
            prefix_backward_s=tuple(t * scale for t in near.prefix_backward_s),
        )

    # ---------------------------------------------------------------- JSON

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Profile:
        data = dict(data)
        data["timings"] = tuple(
            BlockTimes(t["batch"], tuple(t["forward_s"]), tuple(t["backward_s"])) for t in data["timings"]
        )
        data["aux"] = tuple(
            AuxTimes(
                a["stages"],
                a["batch"],
                tuple(a["bounds"]),
                tuple(a["prefix_forward_s"]),
                tuple(a["prefix_backward_s"]),
                a["param_bytes"],
            )
            for a in data["aux"]
        )
        for key in ("input_shape", "block_names", "param_bytes", "param_counts", "activation_bytes"):
            data[key] = tuple(data[key])
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Profile:
        return cls.from_dict(json.loads(Path(path).read_text()))


def _monotone(points: list[BlockTimes]) -> list[BlockTimes]:
    """Per block, cost at batch b := min(cost at every measured batch >= b)."""
    out: list[BlockTimes] = []
    forward = backward = None
    for p in reversed(points):
        forward = p.forward_s if forward is None else tuple(map(min, p.forward_s, forward))
        backward = p.backward_s if backward is None else tuple(map(min, p.backward_s, backward))
        out.append(BlockTimes(p.batch, forward, backward))
    return out[::-1]


def partition_costs(profile: Profile) -> list[float]:
    """Per-block costs under the profile's balance rule (what the runtime's ``split`` uses)."""
    if profile.balance == "blocks":
        return [1.0] * profile.num_blocks
    if profile.balance == "params":
        return [float(c) + 1.0 for c in profile.param_counts]
    forward, backward = profile.block_times(min(profile.batch_size, 64))
    return [f + b for f, b in zip(forward, backward)]


def partition_bounds(profile: Profile, stages: int) -> tuple[int, ...] | None:
    """Cut points for K = ``stages`` (None when K exceeds the number of blocks)."""
    if stages < 1 or stages > profile.num_blocks:
        return None
    return tuple(balanced_bounds(partition_costs(profile), stages))


# --------------------------------------------------------------------------------------------
# Measuring


def default_batch_sizes(
    batch: int, microbatches: Iterable[int] = (), replicas: Iterable[int] = (1,)
) -> list[int]:
    """The global batch, halvings of it down to 2, every replica shard and its micro-batches."""
    sizes = {batch}
    size = batch
    while size > 2:
        size //= 2
        sizes.add(max(size, 2))
    for r in replicas:
        shard = batch // r
        if shard >= 1:
            sizes.add(shard)
            for m in microbatches:
                if shard // m >= 1:
                    sizes.add(max(2, round(shard / m)))
    return sorted(s for s in sizes if s >= 2 or s == batch)


def measure_profile(
    config: RunConfig,
    *,
    device: str | torch.device = "cpu",
    repeats: int = 5,
    stages: Iterable[int] | None = None,
    microbatches: Iterable[int] = (),
    replicas: Iterable[int] = (1,),
    batch_sizes: Iterable[int] | None = None,
    contention: bool = False,
) -> Profile:
    """Measure ``config``'s model block by block on ``device`` (one thread on a CPU).

    Args:
        stages: the K whose AuxNet to profile (default 2…number of blocks); K beyond the number
            of blocks is skipped (the backbone cannot be cut that finely).
        microbatches, replicas: pipeline micro-batch counts and data-parallel replica counts
            whose per-device batch sizes are measured directly rather than interpolated.
        batch_sizes: override the measured batch sizes (default ``default_batch_sizes``).
        contention: also run ``measure_contention`` (CPU only; spawns one process, ~10 s).
    """
    from layerpar.auxnet import boundary_shapes, build_auxnet
    from layerpar.parallel.setup import build_model_for, torch_dtype

    device = torch.device(device)
    dtype = torch_dtype(config.train.dtype)
    microbatches, replicas = list(microbatches), list(replicas)
    threads = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(1)
    rng_state = torch.get_rng_state()
    try:
        model, input_shape, num_classes = build_model_for(config)
        model.to(device=device, dtype=dtype).train()
        saved = {k: v.clone() for k, v in model.state_dict().items()}
        batch = config.train.batch_size
        if batch_sizes is None:
            batch_sizes = default_batch_sizes(batch, microbatches, replicas)
        sizes = sorted(set(batch_sizes))
        sync = synchronizer(device)
        timings: list[BlockTimes] = []
        out_shapes: list[tuple[int, ...]] = []
        for size in sizes:
            torch.manual_seed(size)
            x = torch.randn(size, *input_shape, device=device, dtype=dtype)
            forward, backward, out_shapes = _chain_times(list(model.blocks), x, repeats, sync)
            timings.append(BlockTimes(size, tuple(forward), tuple(backward)))
        element = torch.empty(0, dtype=dtype).element_size()
        activation = tuple(int(torch.Size(s).numel()) * batch * element for s in out_shapes)
        counts = tuple(sum(p.numel() for p in block.parameters()) for block in model.blocks)
        profile = Profile(
            model=config.model.name,
            dataset=config.data.dataset,
            input_shape=tuple(input_shape),
            batch_size=batch,
            balance=config.parallel.balance,
            device=describe_device(device),
            threads=torch.get_num_threads(),
            dtype=config.train.dtype,
            block_names=tuple(type(b).__name__ for b in model.blocks),
            param_bytes=tuple(c * element for c in counts),
            param_counts=counts,
            activation_bytes=activation,
            timings=tuple(timings),
            aux=(),
            sgd_s_per_byte=_sgd_s_per_byte(model, config, repeats, sync),
            adam_s_per_byte=0.0,
            boundary_s_per_byte=_boundary_s_per_byte(
                out_shapes[0], batch, config, device, dtype, repeats, sync
            ),
            batch_s=_batch_seconds(config, input_shape, repeats),
            repeats=repeats,
            torch_version=torch.__version__,
            method=config.layerpar.method,
            accumulate=config.layerpar.accumulate,
        )
        model.load_state_dict(saved)

        # The AuxNet per K: its structure follows the boundaries, so build it for each cut.
        wanted = stages if stages is not None else range(2, len(model) + 1)
        ks = sorted({k for k in wanted if 2 <= k <= len(model)})
        memo: dict[Any, _Timed] = {}

        def make_adam(params: list[nn.Parameter]) -> torch.optim.Optimizer:
            return torch.optim.Adam(params, lr=config.aux.lr)

        aux_rows, adam = [], None
        for k in ks:
            bounds = partition_bounds(profile, k)
            assert bounds is not None
            parts = [model.slice(a, b) for a, b in pairwise(bounds)]
            shapes = boundary_shapes(parts, torch.zeros(2, *input_shape, device=device, dtype=dtype))
            # As parallel/setup.build_setup builds it.  (Label FiLM of the multiplier heads, if
            # configured, counts in the parameter bytes; its tiny elementwise cost is not timed.)
            aux = (
                build_auxnet(
                    tuple(input_shape),
                    shapes,
                    width=config.aux.width,
                    blocks_per_stage=config.aux.blocks_per_stage,
                    multiplier_heads=config.aux.multiplier_heads and config.layerpar.method == "al",
                    label_classes=num_classes if config.aux.label_conditioned_multipliers else None,
                )
                .to(device=device, dtype=dtype)
                .train()
            )
            aux_bytes = sum(p.numel() for p in aux.parameters()) * element
            if adam is None:
                adam = _step_s_per_byte(aux, make_adam, repeats, sync)
            for r in replicas:
                shard = batch // r
                if shard >= 1:
                    fwd, bwd = _aux_prefix_times(
                        aux, shard, tuple(input_shape), device, dtype, repeats, sync, memo
                    )
                    aux_rows.append(AuxTimes(k, shard, tuple(bounds), fwd, bwd, aux_bytes))
        if adam is None:
            adam = _step_s_per_byte(model, make_adam, repeats, sync)
        model.load_state_dict(saved)
        profile = dataclasses.replace(profile, aux=tuple(aux_rows), adam_s_per_byte=adam)
    finally:
        torch.set_num_threads(threads)
        torch.set_rng_state(rng_state)
    if contention and device.type == "cpu":
        profile = dataclasses.replace(
            profile,
            contention=measure_contention(config, repeats=repeats, bounds=partition_bounds(profile, 2)),
        )
    return profile


def _median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def _fwd_bwd(
    module: nn.Module, x: torch.Tensor, needs_grad: bool, repeats: int, sync: Callable[[], None]
) -> tuple[float, float, torch.Tensor]:
    """Median forward and backward seconds of ``module`` on ``x`` (after one warm-up pass).

    Backward starts from the saved output with a ones gradient; the input carries a gradient
    only when ``needs_grad`` (the first block of a network gets none, as in training).
    """
    forward, backward = [], []
    out = x
    for attempt in range(repeats + 1):
        inp = x.detach().requires_grad_(needs_grad)
        sync()
        start = time.perf_counter()
        out = module(inp)
        sync()
        middle = time.perf_counter()
        out.backward(torch.ones_like(out))
        sync()
        end = time.perf_counter()
        module.zero_grad(set_to_none=True)
        if attempt:
            forward.append(middle - start)
            backward.append(end - middle)
    return _median(forward), _median(backward), out.detach()


def _chain_times(
    blocks: list[nn.Module], x: torch.Tensor, repeats: int, sync: Callable[[], None]
) -> tuple[list[float], list[float], list[tuple[int, ...]]]:
    forward, backward, shapes = [], [], []
    for index, block in enumerate(blocks):
        f, b, x = _fwd_bwd(block, x, index > 0, repeats, sync)
        forward.append(f)
        backward.append(b)
        shapes.append(tuple(x.shape[1:]))
    return forward, backward, shapes


_Timed = tuple[float, float, tuple[int, ...]]
"""(forward seconds, backward seconds, output shape) of one AuxNet component."""


def _aux_prefix_times(
    aux: AuxNet,
    batch: int,
    input_shape: tuple[int, ...],
    device: torch.device,
    dtype: torch.dtype,
    repeats: int,
    sync: Callable[[], None],
    memo: dict[Any, _Timed],
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per boundary j: forward of ``aux(x, upto=j)`` and backward of a loss on boundary j.

    Timed component by component (stem, trunk blocks, adapters, heads); a component with the
    same structure and input shape as one already timed (any K) reuses that timing, so every K
    of a deep backbone costs only a few new measurements.
    """

    def timed(module: nn.Module, x_shape: tuple[int, ...], needs_grad: bool) -> _Timed:
        key = (
            repr(module),
            repr(getattr(module, "shape", None)),
            x_shape,
            needs_grad,
            str(device),
            str(dtype),
        )
        if key not in memo:
            x = torch.randn(x_shape, device=device, dtype=dtype)
            f, b, out = _fwd_bwd(module, x, needs_grad, repeats, sync)
            memo[key] = (f, b, tuple(out.shape))
        return memo[key]

    stem_f, stem_b, shape = timed(aux.stem, (batch, *input_shape), False)
    prefix_f, prefix_b = [], []
    forward, trunk_backward = stem_f, stem_b
    for j in range(aux.num_boundaries):
        for layer in aux.segments[j].children():
            f, b, shape = timed(layer, shape, True)
            forward += f
            trunk_backward += b
        ends = [aux.adapters[j]] + ([aux.heads[j]] if aux.heads is not None else [])
        end_times = [timed(m, shape, True) for m in ends]
        forward += sum(t[0] for t in end_times)
        prefix_f.append(forward)
        prefix_b.append(trunk_backward + sum(t[1] for t in end_times))
    aux.zero_grad(set_to_none=True)
    return tuple(prefix_f), tuple(prefix_b)


def _step_s_per_byte(
    module: nn.Module,
    make: Callable[[list[nn.Parameter]], torch.optim.Optimizer],
    repeats: int,
    sync: Callable[[], None],
) -> float:
    """Median optimiser step seconds over ``module``'s parameter bytes (parameters restored)."""
    params = [p for p in module.parameters() if p.requires_grad]
    nbytes = sum(p.numel() * p.element_size() for p in params)
    if nbytes == 0:
        return 0.0
    saved = [p.detach().clone() for p in params]
    optimizer = make(params)
    for p in params:
        p.grad = torch.randn_like(p) * 1e-3
    times = []
    for attempt in range(repeats + 1):
        sync()
        start = time.perf_counter()
        optimizer.step()
        sync()
        if attempt:
            times.append(time.perf_counter() - start)
    with torch.no_grad():
        for p, s in zip(params, saved):
            p.copy_(s)
            p.grad = None
    return _median(times) / nbytes


def _sgd_s_per_byte(model: nn.Module, config: RunConfig, repeats: int, sync: Callable[[], None]) -> float:
    from layerpar.parallel.optim import make_optimizer

    return _step_s_per_byte(model, lambda params: make_optimizer(params, config.optim, 100)[0], repeats, sync)


def _boundary_s_per_byte(
    shape: tuple[int, ...],
    batch: int,
    config: RunConfig,
    device: torch.device,
    dtype: torch.dtype,
    repeats: int,
    sync: Callable[[], None],
) -> float:
    """Elementwise work at a boundary (DESIGN.md §2 steps 3, 4, 7, 8) per activation byte."""
    from layerpar.auxnet import aux_loss
    from layerpar.parallel.local_loss import al_targets, local_loss

    beta = config.layerpar.beta
    h_value = torch.randn(batch, *shape, device=device, dtype=dtype)
    state = torch.randn_like(h_value)
    u = torch.randn_like(h_value)
    times = []
    for attempt in range(repeats + 1):
        h = h_value.clone().requires_grad_(True)
        prediction = state.clone().requires_grad_(True)
        sync()
        start = time.perf_counter()
        loss = local_loss(h, state, None, beta)
        loss.backward()
        assert h.grad is not None
        adjoint = h.grad * batch  # stands in for u.grad * B
        target, _ = al_targets(h.detach(), None, adjoint + u, beta)
        aux_loss(prediction, None, target, None, config.layerpar.gamma).backward()
        sync()
        if attempt:
            times.append(time.perf_counter() - start)
    return _median(times) / (h_value.numel() * h_value.element_size())


def _batch_seconds(config: RunConfig, input_shape: Sequence[int], repeats: int) -> float:
    """Median time of ``BatchPlan.batch`` on random data of the right shape (global batch)."""
    from layerpar.data import ArrayDataset
    from layerpar.parallel.batches import BatchPlan

    batch = config.train.batch_size
    n = 4 * batch
    generator = torch.Generator().manual_seed(0)
    data = ArrayDataset(
        torch.randn(n, *input_shape, generator=generator), torch.zeros(n, dtype=torch.int64), 10
    )
    plan = BatchPlan(data, batch, config.train.seed, crop_pad=config.data.crop_pad, flip=config.data.flip)
    times = []
    for step in range(repeats + 1):
        start = time.perf_counter()
        plan.batch(step)
        if step:
            times.append(time.perf_counter() - start)
    return _median(times)


# --------------------------------------------------------------------------------------------
# Contention: one stage alone versus with the other stage running in a second process


def measure_contention(
    config: RunConfig,
    *,
    repeats: int = 5,
    rounds: int = 3,
    bounds: Sequence[int] | None = None,
    timeout_s: float = 120.0,
) -> float:
    """Slowdown factor (≥ ~1) of a single-thread K = 2 stage when the other stage runs at once.

    Stage 0 of a K = 2 cut (``bounds``, default: the config's balance rule on a quick profile)
    is timed, forward+backward at the global batch, alternately alone and while a second process
    loops over stage 1, ``rounds`` times; returns median(together) / median(alone).  Alternating
    makes drift in other users' load hit both sides alike; the number is still a measurement of
    this machine at this moment.  CPU only.  Call it from code under ``if __name__ ==
    "__main__":`` (it spawns a process).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        from layerpar.parallel.setup import build_model_for

        model, input_shape, _ = build_model_for(config)
        model.train()
        x = torch.randn(config.train.batch_size, *input_shape)
        if bounds is None:
            quick = dataclasses.replace(_quick_profile(model, x), balance=config.parallel.balance)
            bounds = partition_bounds(quick, 2)
        if bounds is None:
            return 1.0
        stage = model.slice(bounds[0], bounds[1])
        saved = {k: v.clone() for k, v in model.state_dict().items()}

        def stage_seconds() -> list[float]:
            times = []
            for attempt in range(repeats + 1):
                start = time.perf_counter()
                out = stage(x)
                out.backward(torch.ones_like(out))
                stage.zero_grad(set_to_none=True)
                if attempt:
                    times.append(time.perf_counter() - start)
            return times

        ctx = mp.get_context("spawn")
        ready, run, busy, idle, stop = (ctx.Event() for _ in range(5))
        proc = ctx.Process(
            target=_contention_load, args=(config, tuple(bounds), ready, run, busy, idle, stop), daemon=True
        )
        proc.start()
        alone: list[float] = []
        together: list[float] = []
        try:
            _wait(ready, proc, timeout_s)
            for _ in range(rounds):
                alone += stage_seconds()
                busy.clear()
                run.set()
                _wait(busy, proc, timeout_s)
                together += stage_seconds()
                idle.clear()
                run.clear()
                _wait(idle, proc, timeout_s)
        finally:
            stop.set()
            run.set()
            proc.join(timeout=30)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)
        model.load_state_dict(saved)
        return _median(together) / _median(alone)
    finally:
        torch.set_num_threads(threads)


def _wait(event: Any, proc: Any, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not event.wait(0.1):
        if not proc.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(
                f"the contention helper process stopped answering (exit code {proc.exitcode}); "
                "call measure_contention from code guarded by `if __name__ == '__main__':`"
            )


def _quick_profile(model: Backbone, x: torch.Tensor) -> Profile:
    """A one-batch profile, enough to cut the model for ``measure_contention``."""
    forward, backward, _ = _chain_times(list(model.blocks), x, 1, lambda: None)
    counts = tuple(sum(p.numel() for p in b.parameters()) for b in model.blocks)
    return Profile(
        model="",
        dataset="",
        input_shape=tuple(x.shape[1:]),
        batch_size=x.shape[0],
        balance="time",
        device="",
        threads=1,
        dtype="float32",
        block_names=tuple("" for _ in counts),
        param_bytes=tuple(4 * c for c in counts),
        param_counts=counts,
        activation_bytes=tuple(0 for _ in counts),
        timings=(BlockTimes(x.shape[0], tuple(forward), tuple(backward)),),
        aux=(),
        sgd_s_per_byte=0.0,
        adam_s_per_byte=0.0,
        boundary_s_per_byte=0.0,
        batch_s=0.0,
    )


def _contention_load(
    config: RunConfig, bounds: tuple[int, ...], ready: Any, run: Any, busy: Any, idle: Any, stop: Any
) -> None:
    """Second process of ``measure_contention``: stage 1 forward+backward in a loop while ``run``
    is set (``busy`` after each step), idle otherwise (``idle``), until ``stop``."""
    from layerpar.parallel.setup import build_model_for

    torch.set_num_threads(1)
    model, input_shape, _ = build_model_for(config)
    model.train()
    head = model.slice(0, bounds[1])
    stage = model.slice(bounds[1], bounds[2])
    with torch.no_grad():
        x = head(torch.randn(config.train.batch_size, *input_shape))

    def step() -> None:
        inp = x.detach().requires_grad_(True)
        out = stage(inp)
        out.backward(torch.ones_like(out))
        stage.zero_grad(set_to_none=True)

    step()  # warm-up
    ready.set()
    while not stop.is_set():
        if run.wait(0.05) and not stop.is_set():
            step()
            busy.set()
        else:
            idle.set()
