"""Contention: one single-thread stage timed alone versus with another stage in a second process.

The profile is taken in one process, alone.  On a small shared machine (2 cores here) K
single-thread worker processes running at once slow each other down (shared memory bandwidth
and caches, hyper-threads, other users), which a single-process profile cannot see.
``measure_contention`` measures it rather than guessing it: the same stage timed alone, and
again while the other stage of a K = 2 cut runs in a second process.  The ratio is stored as the
explicit field ``Profile.contention`` (None when not measured) and the cost model multiplies the
compute of multi-device arms by it only when asked to.
"""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from layerpar.bench.profile import BlockTimes, Profile, partition_bounds
from layerpar.bench.profile_timing import chain_times, median
from layerpar.config import RunConfig

if TYPE_CHECKING:
    from layerpar.models.backbone import Backbone


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
        return median(together) / median(alone)
    finally:
        torch.set_num_threads(threads)


def _wait(event: Any, proc: Any, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not event.wait(0.1):
        if not proc.is_alive():
            raise RuntimeError(
                f"the contention helper process stopped answering (exit code {proc.exitcode}); "
                "call measure_contention from code guarded by `if __name__ == '__main__':`"
            )
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"the contention helper process did not answer within {timeout_s:g} s: is the machine "
                "busy with other work? Measure on an idle machine"
            )


def _quick_profile(model: Backbone, x: torch.Tensor) -> Profile:
    """A one-batch profile, enough to cut the model for ``measure_contention``."""
    forward, backward, _ = chain_times(list(model.blocks), x, 1, lambda: None)
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
