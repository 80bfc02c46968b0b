"""Measuring a ``Profile``: ``measure_profile`` times a config's model block by block, its AuxNet
per K, the optimiser steps, a boundary's elementwise work and the batch preparation.

Everything is measured on one device: a GPU, or one CPU core (``torch.set_num_threads(1)``, the
benchmark's definition of a device).  Data are random tensors of the right shape (timing only).
BatchNorm buffers and parameters are restored afterwards.  The timing helpers are in
``profile_timing.py``; the optional contention factor is ``profile_contention.py``'s.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from itertools import pairwise
from typing import Any

import torch
from torch import nn

from layerpar.bench.common import describe_device, synchronizer
from layerpar.bench.profile import AuxTimes, BlockTimes, Profile, StageSaved, StageSplit, partition_bounds
from layerpar.bench.profile_contention import measure_contention
from layerpar.bench.profile_runtime import measure_runtime_overhead
from layerpar.bench.profile_timing import (
    Timed,
    aux_prefix_times,
    batch_seconds,
    boundary_s_per_byte,
    chain_times,
    sgd_s_per_byte,
    stage_split_times,
    step_s_per_byte,
)
from layerpar.config import RunConfig
from layerpar.parallel.stash_meter import SavedBytes


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


def stage_saved_bytes(parts: Sequence[nn.Module], x: torch.Tensor) -> tuple[int, ...]:
    """Bytes autograd saves in each part's forward, chained as the pipeline runs them (a part
    after the first gets a leaf input that requires grad; each part's weights apart)."""
    saved = []
    u = x
    for part in parts:
        with SavedBytes(exclude=part.parameters()).count() as counter:
            out = part(u)
        saved.append(counter.bytes)
        u = out.detach().requires_grad_(True)
    return tuple(saved)


def split_rows(
    profile: Profile,
    model: Any,
    ks: Iterable[int],
    microbatches: Iterable[int],
    repeats: int,
    device: torch.device,
    dtype: torch.dtype,
) -> tuple[StageSplit, ...]:
    """``StageSplit`` of the 2K-stage cut (the two-stages-per-rank schedules') for every K of
    ``ks`` and micro-batch of the global batch over each of ``microbatches``."""
    rows = []
    sync = synchronizer(device)
    for k in ks:
        bounds = partition_bounds(profile, 2 * k)
        if bounds is None:
            continue
        parts = [model.slice(a, b) for a, b in pairwise(bounds)]
        for size in sorted({max(2, profile.batch_size // m) for m in microbatches if m >= 1}):
            torch.manual_seed(size)
            x = torch.randn(size, *profile.input_shape, device=device, dtype=dtype)
            full, input_pass, weight_pass = stage_split_times(parts, x, repeats, sync)
            rows.append(StageSplit(2 * k, tuple(bounds), size, full, input_pass, weight_pass))
    return tuple(rows)


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
    schedules: Iterable[str] = (),
    runtime_stages: Iterable[int] | None = None,
) -> Profile:
    """Measure ``config``'s model block by block on ``device`` (one thread on a CPU).

    Args:
        stages: the K whose AuxNet to profile (default 2…number of blocks); K beyond the number
            of blocks is skipped (the backbone cannot be cut that finely).
        microbatches, replicas: pipeline micro-batch counts and data-parallel replica counts
            whose per-device batch sizes are measured directly rather than interpolated.
        batch_sizes: override the measured batch sizes (default ``default_batch_sizes``).
        contention: also run ``measure_contention`` (CPU only; spawns one process, ~10 s).
        schedules: pipeline schedules (``profile_runtime.SCHEDULES``) whose runtime cost to
            measure at every K of ``runtime_stages`` (default: ``stages``) and M of
            ``microbatches``, in K processes on tiny stages (CPU only; a few seconds).
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
            forward, backward, out_shapes = chain_times(list(model.blocks), x, repeats, sync)
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
            sgd_s_per_byte=sgd_s_per_byte(model, config, repeats, sync),
            adam_s_per_byte=0.0,
            boundary_s_per_byte=boundary_s_per_byte(
                out_shapes[0], batch, config, device, dtype, repeats, sync
            ),
            batch_s=batch_seconds(config, input_shape, repeats),
            repeats=repeats,
            torch_version=torch.__version__,
            method=config.layerpar.method,
            accumulate=config.layerpar.accumulate,
        )
        model.load_state_dict(saved)

        # The AuxNet per K: its structure follows the boundaries, so build it for each cut.
        wanted = stages if stages is not None else range(2, len(model) + 1)
        ks = sorted({k for k in wanted if 2 <= k <= len(model)})
        memo: dict[Any, Timed] = {}

        def make_adam(params: list[nn.Parameter]) -> torch.optim.Optimizer:
            return torch.optim.Adam(params, lr=config.aux.lr)

        aux_rows, saved_rows, adam = [], [], None
        for k in ks:
            bounds = partition_bounds(profile, k)
            assert bounds is not None
            parts = [model.slice(a, b) for a, b in pairwise(bounds)]
            x = torch.randn(batch, *input_shape, device=device, dtype=dtype)
            saved_rows.append(StageSaved(k, tuple(bounds), stage_saved_bytes(parts, x)))
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
                adam = step_s_per_byte(aux, make_adam, repeats, sync)
            for r in replicas:
                shard = batch // r
                if shard >= 1:
                    fwd, bwd = aux_prefix_times(
                        aux, shard, tuple(input_shape), device, dtype, repeats, sync, memo
                    )
                    aux_rows.append(AuxTimes(k, shard, tuple(bounds), fwd, bwd, aux_bytes))
        if adam is None:
            adam = step_s_per_byte(model, make_adam, repeats, sync)
        model.load_state_dict(saved)
        split = split_rows(profile, model, ks, microbatches, repeats, device, dtype)
        model.load_state_dict(saved)
        profile = dataclasses.replace(
            profile, aux=tuple(aux_rows), adam_s_per_byte=adam, stage_saved=tuple(saved_rows), split=split
        )
        if device.type == "cpu" and schedules:
            runtime = measure_runtime_overhead(
                schedules=schedules,
                stages=ks if runtime_stages is None else runtime_stages,
                microbatches=microbatches,
            )
            profile = dataclasses.replace(profile, runtime=runtime)
    finally:
        torch.set_num_threads(threads)
        torch.set_rng_state(rng_state)
    if contention and device.type == "cpu":
        profile = dataclasses.replace(
            profile,
            contention=measure_contention(config, repeats=repeats, bounds=partition_bounds(profile, 2)),
        )
    return profile
