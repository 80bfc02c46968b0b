"""Low-level timing helpers of ``profile_measure.measure_profile`` (and of the contention probe).

Each returns a median over ``repeats`` timed passes after one warm-up pass; ``sync`` waits for
the device (``common.synchronizer``).  Data are random tensors of the right shape (timing only);
optimiser steps restore the parameters they move.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from layerpar.config import RunConfig

if TYPE_CHECKING:
    from layerpar.auxnet.network import AuxNet


def median(values: Sequence[float]) -> float:
    """The median as a float."""
    return float(statistics.median(values))


def fwd_bwd(
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
    return median(forward), median(backward), out.detach()


def split_backward(
    module: nn.Module, x: torch.Tensor, needs_grad: bool, repeats: int, sync: Callable[[], None]
) -> tuple[float, float, torch.Tensor]:
    """Median seconds of the two halves of ``module``'s backward as the zero-bubble schedules run
    it: the input-gradient pass (``I``, keeping the graph) and the weight-gradient pass from the
    intermediates it saved (``W``), through torch's own ``stage_backward_input`` and
    ``stage_backward_weight``.  On a CPU the two together cost more than one full backward,
    which ``fwd_bwd`` cannot see."""
    from torch.distributed.pipelining._backward import stage_backward_input, stage_backward_weight

    input_pass, weight_pass = [], []
    out = x
    for attempt in range(repeats + 1):
        inp = x.detach().requires_grad_(needs_grad)
        out = module(inp)
        sync()
        start = time.perf_counter()
        _, groups = stage_backward_input([out], [torch.ones_like(out)], [inp], module.parameters())
        sync()
        middle = time.perf_counter()
        stage_backward_weight(module.parameters(), groups)
        sync()
        end = time.perf_counter()
        module.zero_grad(set_to_none=True)
        if attempt:
            input_pass.append(middle - start)
            weight_pass.append(end - middle)
    return median(input_pass), median(weight_pass), out.detach()


def stage_split_times(
    parts: Sequence[nn.Module], x: torch.Tensor, repeats: int, sync: Callable[[], None]
) -> tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]]:
    """Per stage of the chain ``parts`` fed ``x``: seconds of its full backward and of the I and
    W passes of its split backward, as torch's ``PipelineStage`` runs them (the first stage has
    no input gradient: its I does nothing and its W is the full backward)."""
    full, input_pass, weight_pass = [], [], []
    for index, part in enumerate(parts):
        _, b, out = fwd_bwd(part, x, index > 0, repeats, sync)
        i, w = (0.0, b) if index == 0 else split_backward(part, x, True, repeats, sync)[:2]
        full.append(b)
        input_pass.append(i)
        weight_pass.append(w)
        x = out
    return tuple(full), tuple(input_pass), tuple(weight_pass)


def chain_times(
    blocks: list[nn.Module], x: torch.Tensor, repeats: int, sync: Callable[[], None]
) -> tuple[list[float], list[float], list[tuple[int, ...]]]:
    """Per block of the chain fed ``x``: forward and backward seconds and output shape (no batch)."""
    forward, backward, shapes = [], [], []
    for index, block in enumerate(blocks):
        f, b, x = fwd_bwd(block, x, index > 0, repeats, sync)
        forward.append(f)
        backward.append(b)
        shapes.append(tuple(x.shape[1:]))
    return forward, backward, shapes


Timed = tuple[float, float, tuple[int, ...]]
"""(forward seconds, backward seconds, output shape) of one AuxNet component."""


def aux_prefix_times(
    aux: AuxNet,
    batch: int,
    input_shape: tuple[int, ...],
    device: torch.device,
    dtype: torch.dtype,
    repeats: int,
    sync: Callable[[], None],
    memo: dict[Any, Timed],
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per boundary j: forward of ``aux(x, upto=j)`` and backward of a loss on boundary j.

    Timed component by component (stem, trunk blocks, adapters, heads); a component with the
    same structure and input shape as one already timed (any K) reuses that timing, so every K
    of a deep backbone costs only a few new measurements.
    """

    def timed(module: nn.Module, x_shape: tuple[int, ...], needs_grad: bool) -> Timed:
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
            f, b, out = fwd_bwd(module, x, needs_grad, repeats, sync)
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


def step_s_per_byte(
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
    return median(times) / nbytes


def sgd_s_per_byte(model: nn.Module, config: RunConfig, repeats: int, sync: Callable[[], None]) -> float:
    """The config's main-network optimiser step, seconds per parameter byte."""
    from layerpar.parallel.optim import make_optimizer

    return step_s_per_byte(model, lambda params: make_optimizer(params, config.optim, 100)[0], repeats, sync)


def boundary_s_per_byte(
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
    return median(times) / (h_value.numel() * h_value.element_size())


def batch_seconds(config: RunConfig, input_shape: Sequence[int], repeats: int) -> float:
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
    return median(times)
