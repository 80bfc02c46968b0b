"""A measured per-block profile of one run config: what the scaling model (``costmodel.py``) eats.

For every block of the backbone: forward and backward seconds (timed separately, at the global
batch and at smaller batches, so that micro-batches and data-parallel shards use *measured*
costs: on a CPU a block at batch B/M costs more than 1/M of the block at B), its output
activation bytes and its parameter bytes.  For every K: the AuxNet's forward and backward
seconds per boundary prefix.  Plus the optimiser cost per parameter byte, the elementwise cost of
a boundary's local loss, the batch preparation every rank repeats, and (optional) a measured
contention factor.

This module holds the data (``Profile`` and its parts, JSON) and the cut points the cost model
uses (``partition_bounds``); ``profile_measure.measure_profile`` measures a profile (with the
timing helpers of ``profile_timing.py``) and ``profile_contention.measure_contention`` the
contention factor.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from layerpar.parallel.partition import balanced_bounds

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
class StageSaved:
    """What autograd saves for the backward of each stage of the K-stage cut at ``bounds``, at the
    profile's batch size (linear in the batch; each stage's weights apart): the activation side
    of the pipelined method's stash (``parallel/stash_meter.py``)."""

    stages: int
    bounds: tuple[int, ...]
    saved_bytes: tuple[int, ...]


@dataclass(frozen=True)
class StageSplit:
    """The stages of the ``stages``-stage cut at ``bounds``, at micro-batch ``batch``: seconds of
    each stage's full backward and of the input-gradient (I) and weight-gradient (W) passes of
    its split backward, as the zero-bubble schedules run them (``profile_timing.stage_split_times``).
    The cost model uses the ratios I/B and W/B, so the block profile's clock stays the clock."""

    stages: int
    bounds: tuple[int, ...]
    batch: int
    backward_s: tuple[float, ...]
    input_s: tuple[float, ...]
    weight_s: tuple[float, ...]

    def shares(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per stage, I / B and W / B (a stage with no measurable backward: 0 and 1)."""
        times = zip(self.backward_s, self.input_s, self.weight_s)
        pairs = [(i / b, w / b) if b > 0 else (0.0, 1.0) for b, i, w in times]
        return tuple(p[0] for p in pairs), tuple(p[1] for p in pairs)


@dataclass(frozen=True)
class RuntimeOverhead:
    """Seconds per step of torch's pipeline runtime itself under ``schedule`` on ``stages`` ranks
    with ``microbatches`` micro-batches: the real schedule on tiny stages in ``stages`` gloo
    processes (``profile_runtime.py``; profiles before 2026-12-08 hold the older one-process
    reading, the runtime over plain autograd on one rank's share, which may read negative)."""

    schedule: str
    stages: int
    microbatches: int
    seconds: float


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
    stage_saved: tuple[StageSaved, ...] = ()
    """Per profiled K (profiles older than the stash meter have none)."""
    runtime: tuple[RuntimeOverhead, ...] = ()
    """Per pipeline schedule, K and M measured (older profiles have none: no runtime cost)."""
    split: tuple[StageSplit, ...] = ()
    """Per 2K-stage cut and micro-batch measured (older profiles have none: a split backward is
    costed as the full one, halved)."""
    cuts: tuple[tuple[int, ...], ...] = ()
    """Cuts to use instead of the profile's own balance (``with_cut``): the cut a measured arm
    ran, which a ``time`` balance chooses anew each time a run starts."""

    def with_cut(self, bounds: Sequence[int]) -> Profile:
        """This profile, cutting the model into len(bounds) − 1 stages at ``bounds``."""
        kept = tuple(c for c in self.cuts if len(c) != len(bounds))
        return dataclasses.replace(self, cuts=(*kept, tuple(int(b) for b in bounds)))

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

    def saved_bytes_at(self, stages: int, batch: float) -> tuple[tuple[int, ...], list[float]] | None:
        """(bounds, bytes autograd saves per stage at ``batch``) of the K-stage cut, if profiled."""
        for row in self.stage_saved:
            if row.stages == stages:
                return row.bounds, [b * batch / self.batch_size for b in row.saved_bytes]
        return None

    def runtime_overhead(self, schedule: str, stages: int, microbatches: int) -> float:
        """Seconds per step of torch's runtime on one rank (``RuntimeOverhead``; never below 0).

        Measured at this K and M when profiled; otherwise at the measured K nearest this one
        with this M; 0 when this schedule and M were not profiled at all."""
        rows = [r for r in self.runtime if r.schedule == schedule and r.microbatches == microbatches]
        if not rows:
            return 0.0
        nearest = min(rows, key=lambda r: (abs(r.stages - stages), r.stages))
        return max(0.0, nearest.seconds)

    def split_shares(self, stages: int, batch: float) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
        """Per stage of the ``stages``-stage cut: I / B and W / B of its split backward, measured
        at the micro-batch nearest ``batch`` (by ratio); None if that cut was not measured."""
        rows = [r for r in self.split if r.stages == stages]
        if not rows:
            return None
        nearest = min(rows, key=lambda r: abs(math.log(r.batch / max(batch, 1e-9))))
        return nearest.shares()

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
        data["stage_saved"] = tuple(
            StageSaved(d["stages"], tuple(d["bounds"]), tuple(d["saved_bytes"]))
            for d in data.get("stage_saved", ())
        )
        data["runtime"] = tuple(RuntimeOverhead(**d) for d in data.get("runtime", ()))
        data["split"] = tuple(
            StageSplit(
                d["stages"],
                tuple(d["bounds"]),
                d["batch"],
                tuple(d["backward_s"]),
                tuple(d["input_s"]),
                tuple(d["weight_s"]),
            )
            for d in data.get("split", ())
        )
        data["cuts"] = tuple(tuple(c) for c in data.get("cuts", ()))
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
    for cut in profile.cuts:
        if len(cut) == stages + 1:
            return cut
    return tuple(balanced_bounds(partition_costs(profile), stages))
