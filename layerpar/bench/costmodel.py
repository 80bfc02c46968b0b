"""The scaling model: predicted step seconds of every arm from a measured ``Profile`` and a link.

Pure arithmetic on a profile (no tensors are touched), so it predicts layouts no machine here
has: K = 1…64 stages, stages × replicas, NVLink or InfiniBand links.

Devices.  Every device of a parallel arm is assumed as fast as the one the profile was measured
on; ``contention`` (≥ 1, default 1) multiplies the compute of arms that run on several devices at
once, for machines whose "devices" share memory bandwidth (CPU cores; see
``profile_contention.measure_contention``).  Communication and compute on a device do not
overlap (gloo on one CPU thread mostly serialises them; for GPUs this is pessimistic for DDP,
whose bucketed all-reduce hides behind the backward pass).

Links.  ``p2p(n) = latency + n / bandwidth``; ring all-reduce over ``r`` ranks:
``2(r−1)/r · n / bandwidth + 2(r−1) · latency``.

Arms (B = global batch, K stages, R replicas, M micro-batches; f_k, b_k = forward, backward of
stage k at the per-device batch, from measured block times; opt = optimiser seconds per byte ×
parameter bytes; every rank prepares the global batch, ``batch_s``):

* serial:   batch + Σ_blocks (f + b) + opt(all parameters).
* contention (a probe, not a method): serial's step in each of D processes at once, its
  forward and backward times the contention factor.
* layerpar: DESIGN.md §2, with the waits of the phase program in ``parallel/stage.py``.  Stage k
  at batch B/R finishes its local step at
  ``A_k = batch + c·(aux_fwd_k + f_k + b_k + local_k) + allreduce_R(stage k bytes) + opt_k``;
  it may start its AuxNet update once the adjoint of stage k+1 has arrived:
  ``ready_k = max(A_k, A_{k+1} + p2p(boundary k bytes)) + c·(aux_bwd_k + aux_loss_k)``; then
  all K·R ranks all-reduce the AuxNet gradients and step it:
  ``step = max_k ready_k + allreduce_{K·R}(AuxNet bytes) + adam(AuxNet bytes)``.
  (The issue's simpler form ``max_k[f+b+aux+opt] + p2p + allreduce`` is the special case where
  the adjoint never waits.)
* layerpar with ``layerpar.method: pipelined`` (parallel/methods/pipelined.py): every step is M
  micro-batches of B/(R·M) (M from the config, by default the smallest power of two ≥ 2(K−1)),
  and no stage waits inside a micro-batch: each sends its output forward and its input gradient
  back for the next one.  ``step = batch + M·max_k[c·(f_k + b_k) + p2p(out_k) + p2p(in_k)]
  + max_k[allreduce_R(stage k bytes) + opt_k]``; no AuxNet and no bubble.
* ddp over D = K·R devices: batch + c·Σ(f + b at B//D) + allreduce_D(all bytes) + opt(all).
* gpipe / 1f1b: K stages, M micro-batches of B/(R·M), replicated R times:
  batch + c·[Σ_k(f_k + b_k) + (M − 1)·max_k(f_k + b_k)]  (= (M + K − 1)·max(f + b) when balanced)
  + (M + K − 1)·[p2p(activation) + p2p(gradient)] at the largest boundary
  + max_k[allreduce_R(stage k bytes) + opt_k].  1F1B and GPipe share the bubble; they differ in
  activation memory, not in this model's time.
* interleaved1f1b / interleavedzb / zbv / dualpipev: 2K stages, two per rank; the pipeline part
  is torch's own action order for (K, M) replayed against the stage times
  (``costmodel_multistage.py``, ``schedule_sim.makespan``: a backward split into I + W halves,
  one p2p per cross-rank hop),
  then ``batch + makespan + max_rank[allreduce_R(rank bytes) + opt_rank]``.

The cut for K stages is the runtime's: ``balanced_bounds`` on the profile's block costs under the
config's balance rule (``profile.partition_bounds``; for ``time``: forward+backward at min(B, 64),
as ``setup.choose_bounds`` measures it).  K beyond the number of blocks cannot be cut: every
function returns None.

One function per formula; which arm uses which is that arm's ``predict`` hook in
``registry.py``, and ``predict.predict(arm, ...)`` looks it up.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from itertools import pairwise
from typing import Any

from layerpar.bench.profile import Profile, partition_bounds
from layerpar.errors import ConfigError
from layerpar.parallel.methods.pipelined import default_micro_batches

# --------------------------------------------------------------------------------------------
# Links


@dataclass(frozen=True)
class Link:
    """A link between two devices: per-message latency (s) and bandwidth (bytes/s)."""

    latency_s: float
    bandwidth_Bps: float
    name: str = "custom"
    sender_copies: bool = False
    """A message's bytes / bandwidth is CPU time of its sender (gloo on a CPU writes the tensor
    into the socket in the thread that posts it), not only a delay before it arrives."""

    def __post_init__(self) -> None:
        if self.latency_s < 0 or self.bandwidth_Bps <= 0:
            raise ConfigError(
                f"link needs latency >= 0 and bandwidth > 0, got latency={self.latency_s} s, "
                f"bandwidth={self.bandwidth_Bps} B/s"
            )

    def p2p(self, nbytes: float) -> float:
        """One point-to-point message of ``nbytes``."""
        return self.latency_s + nbytes / self.bandwidth_Bps if nbytes > 0 else 0.0

    def sender_busy(self, nbytes: float) -> float:
        """Seconds posting a message of ``nbytes`` holds its sender (0 unless ``sender_copies``)."""
        return nbytes / self.bandwidth_Bps if self.sender_copies and nbytes > 0 else 0.0

    def allreduce(self, nbytes: float, ranks: int) -> float:
        """Ring all-reduce of ``nbytes`` over ``ranks`` ranks (0 for one rank)."""
        if ranks <= 1 or nbytes <= 0:
            return 0.0
        return 2 * (ranks - 1) / ranks * nbytes / self.bandwidth_Bps + 2 * (ranks - 1) * self.latency_s


LINKS: dict[str, Link] = {
    # gloo over loopback between two single-thread processes.  ENVIRONMENT.md: 1 MB send+recv
    # round trip 1.0–1.8 ms, 1 MB all_reduce 1.7–2.5 ms.  A sweep on the same 2-core machine
    # (4 B…16 MB) gave one-way p2p ≈ 80 µs + n / 3.7 GB/s, and all-reduce ≈ n / 1.8 GB/s for
    # large n (reduction and copies on the CPU).  2 GB/s splits the difference:
    # p2p(1 MB) = 0.6 ms (round trip 1.2 ms), all-reduce(1 MB, 2 ranks) = 0.7 ms.
    # Measured in the pipeline arms' breakdown (bench/pipeline_clock.py, "post p2p"): posting a
    # send costs its rank about its bytes / 2 GB/s of CPU time, so the sender is busy that long.
    "gloo-loopback": Link(80e-6, 2.0e9, "gloo-loopback", sender_copies=True),
    # NVLink (NCCL between GPUs of one node): ~5 µs per message, ~150 GB/s per direction.
    "nvlink": Link(5e-6, 150e9, "nvlink"),
    # InfiniBand HDR (200 Gb/s) between nodes: ~2 µs, ~20 GB/s achievable.
    "infiniband": Link(2e-6, 20e9, "infiniband"),
}


def get_link(
    name: str = "gloo-loopback", *, latency_s: float | None = None, bandwidth_Bps: float | None = None
) -> Link:
    """A named link, optionally with its latency and/or bandwidth overridden."""
    if name not in LINKS:
        raise ConfigError(
            f"unknown link {name!r}; valid: {', '.join(LINKS)} (override with latency/bandwidth)"
        )
    link = LINKS[name]
    changes: dict[str, Any] = {}
    if latency_s is not None:
        changes["latency_s"] = float(latency_s)
    if bandwidth_Bps is not None:
        changes["bandwidth_Bps"] = float(bandwidth_Bps)
    if changes:
        link = replace(link, **changes, name=f"{link.name} (overridden)")
    return link


# --------------------------------------------------------------------------------------------
# Predictions


@dataclass(frozen=True)
class Prediction:
    """One arm on one layout: predicted step seconds and where they go."""

    arm: str
    stages: int
    replicas: int
    devices: int
    microbatches: int | None
    step_s: float
    compute_s: float
    """Compute on the critical path (including the contention factor)."""
    comm_s: float
    """Communication on the critical path."""
    bounds: tuple[int, ...] = ()
    stage_s: tuple[float, ...] = field(default_factory=tuple)
    """Per-stage compute (forward + backward + AuxNet), for imbalance diagnostics."""
    rank_compute_s: tuple[float, ...] = field(default_factory=tuple)
    """Pipeline arms: per rank, the compute of its actions in one step (no waits, messages or
    optimiser), to set beside the arm's measured breakdown (``bench/pipeline_clock.py``)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _stage_sums(values: list[float], bounds: tuple[int, ...]) -> list[float]:
    return [sum(values[a:b]) for a, b in pairwise(bounds)]


def predict_serial(profile: Profile) -> Prediction:
    forward, backward = profile.block_times(profile.batch_size)
    compute = sum(forward) + sum(backward) + profile.sgd_s_per_byte * sum(profile.param_bytes)
    return Prediction(
        "serial",
        1,
        1,
        1,
        None,
        profile.batch_s + compute,
        compute,
        0.0,
        (0, profile.num_blocks),
        (sum(forward) + sum(backward),),
    )


def predict_serial_copies(profile: Profile, devices: int, contention: float = 1.0) -> Prediction | None:
    """``devices`` independent serial steps at once (the ``contention`` probe arm)."""
    if devices < 2:
        return None
    serial = predict_serial(profile)
    work = serial.stage_s[0]
    compute = serial.compute_s + (contention - 1.0) * work
    return replace(
        serial,
        arm="contention",
        stages=devices,
        devices=devices,
        step_s=profile.batch_s + compute,
        compute_s=compute,
        stage_s=(contention * work,),
    )


def predict_layerpar(
    profile: Profile, stages: int, replicas: int, link: Link, contention: float = 1.0
) -> Prediction | None:
    if profile.method == "pipelined" and stages > 1:
        return predict_pipelined(profile, stages, replicas, link, contention)
    if profile.method in ("corrected", "local"):
        return None  # its heads and second backward are not modelled: no prediction, not a guess
    bounds = partition_bounds(profile, stages)
    batch = profile.batch_size // replicas
    if bounds is None or batch < 1:
        return None
    c = contention if stages * replicas > 1 else 1.0
    forward, backward = profile.block_times(batch)
    fb = _stage_sums([f + b for f, b in zip(forward, backward)], bounds)
    pbytes = _stage_sums([float(p) for p in profile.param_bytes], bounds)
    acts = profile.activation_bytes_at(batch)
    boundary = [acts[b - 1] for b in bounds[1:-1]]  # output of stage k, k < K-1
    if stages > 1:
        aux = profile.aux_times(stages, batch)
        aux_fwd = [aux.prefix_forward_s[min(k, stages - 2)] for k in range(stages)]
        aux_bwd = [aux.prefix_backward_s[k] if k < stages - 1 else 0.0 for k in range(stages)]
        aux_bytes = aux.param_bytes
    else:
        aux_fwd, aux_bwd, aux_bytes = [0.0], [0.0], 0
    elementwise = [
        profile.boundary_s_per_byte * boundary[k] if k < stages - 1 else 0.0 for k in range(stages)
    ]
    stage_compute = [c * (aux_fwd[k] + fb[k] + 0.5 * elementwise[k]) for k in range(stages)]
    stage_sync = [link.allreduce(pbytes[k], replicas) for k in range(stages)]
    local = [
        profile.batch_s + stage_compute[k] + stage_sync[k] + profile.sgd_s_per_byte * pbytes[k]
        for k in range(stages)
    ]
    ready = []
    for k in range(stages):
        if k == stages - 1:
            ready.append(local[k])
        else:
            adjoint_arrives = local[k + 1] + link.p2p(boundary[k])
            ready.append(max(local[k], adjoint_arrives) + c * (aux_bwd[k] + 0.5 * elementwise[k]))
    aux_sync = link.allreduce(aux_bytes, stages * replicas)
    step = max(ready) + aux_sync + profile.adam_s_per_byte * aux_bytes
    slowest = max(range(stages), key=lambda k: ready[k])
    comm = stage_sync[slowest] + aux_sync
    if slowest < stages - 1 and local[slowest + 1] + link.p2p(boundary[slowest]) > local[slowest]:
        comm += link.p2p(boundary[slowest])
    stage_s = tuple(stage_compute[k] + c * (aux_bwd[k] + 0.5 * elementwise[k]) for k in range(stages))
    return Prediction(
        "layerpar",
        stages,
        replicas,
        stages * replicas,
        None,
        step,
        step - comm - profile.batch_s,
        comm,
        bounds,
        stage_s,
    )


def predict_pipelined(
    profile: Profile, stages: int, replicas: int, link: Link, contention: float = 1.0
) -> Prediction | None:
    """The layerpar arm with the pipelined method (module docstring)."""
    bounds = partition_bounds(profile, stages)
    micro = profile.accumulate if profile.accumulate is not None else default_micro_batches(stages)
    shard = profile.batch_size // replicas
    if bounds is None or shard < micro:
        return None
    c = contention if stages * replicas > 1 else 1.0
    forward, backward = profile.block_times(shard / micro)
    fb = [c * t for t in _stage_sums([f + b for f, b in zip(forward, backward)], bounds)]
    acts = profile.activation_bytes_at(shard / micro)
    boundary = [acts[b - 1] for b in bounds[1:-1]]
    sends = [
        (link.p2p(boundary[k]) if k < stages - 1 else 0.0) + (link.p2p(boundary[k - 1]) if k > 0 else 0.0)
        for k in range(stages)
    ]
    tick = [fb[k] + sends[k] for k in range(stages)]
    pbytes = _stage_sums([float(p) for p in profile.param_bytes], bounds)
    update = [link.allreduce(pbytes[k], replicas) + profile.sgd_s_per_byte * pbytes[k] for k in range(stages)]
    slowest, slowest_update = (
        max(range(stages), key=lambda k: tick[k]),
        max(range(stages), key=lambda k: update[k]),
    )
    step = profile.batch_s + micro * tick[slowest] + update[slowest_update]
    sync = link.allreduce(pbytes[slowest_update], replicas)
    comm = micro * sends[slowest] + sync
    return Prediction(
        "layerpar",
        stages,
        replicas,
        stages * replicas,
        None,
        step,
        step - comm - profile.batch_s,
        comm,
        bounds,
        tuple(micro * t for t in fb),
        tuple(micro * t for t in fb),
    )


def predict_ddp(
    profile: Profile,
    devices: int,
    link: Link,
    contention: float = 1.0,
    stages: int | None = None,
    replicas: int | None = None,
) -> Prediction | None:
    """Data parallelism over ``devices`` (each takes B // devices samples, like ``BatchPlan``)."""
    batch = profile.batch_size // devices
    if batch < 1 or devices < 1:
        return None
    c = contention if devices > 1 else 1.0
    forward, backward = profile.block_times(batch)
    compute = c * (sum(forward) + sum(backward)) + profile.sgd_s_per_byte * sum(profile.param_bytes)
    comm = link.allreduce(sum(profile.param_bytes), devices)
    return Prediction(
        "ddp",
        stages or devices,
        replicas or 1,
        devices,
        None,
        profile.batch_s + compute + comm,
        compute,
        comm,
        (0, profile.num_blocks),
        (c * (sum(forward) + sum(backward)),),
    )


def predict_pipeline(
    profile: Profile,
    stages: int,
    replicas: int,
    microbatches: int,
    link: Link,
    contention: float = 1.0,
    schedule: str = "gpipe",
) -> Prediction | None:
    bounds = partition_bounds(profile, stages)
    shard = profile.batch_size // replicas
    if bounds is None or shard < 1 or microbatches < 1 or shard < microbatches:
        return None
    c = contention if stages * replicas > 1 else 1.0
    micro = shard / microbatches
    forward, backward = profile.block_times(micro)
    # torch's runtime on a rank (profile_runtime.py), spread over the rank's 2M actions
    runtime = c * profile.runtime_overhead(schedule, stages, microbatches) / microbatches
    fb = [c * t + runtime for t in _stage_sums([f + b for f, b in zip(forward, backward)], bounds)]
    compute_path = sum(fb) + (microbatches - 1) * max(fb)
    acts = profile.activation_bytes_at(micro)
    largest = max((acts[b - 1] for b in bounds[1:-1]), default=0.0)
    transfers = (microbatches + stages - 1) * 2 * link.p2p(largest) if stages > 1 else 0.0
    pbytes = _stage_sums([float(p) for p in profile.param_bytes], bounds)
    update = [link.allreduce(pbytes[k], replicas) + profile.sgd_s_per_byte * pbytes[k] for k in range(stages)]
    slowest = max(range(stages), key=lambda k: update[k])
    sync = link.allreduce(pbytes[slowest], replicas)
    step = profile.batch_s + compute_path + transfers + max(update)
    return Prediction(
        schedule,
        stages,
        replicas,
        stages * replicas,
        microbatches,
        step,
        compute_path + update[slowest] - sync,
        transfers + sync,
        bounds,
        tuple(fb),
        tuple(microbatches * t for t in fb),
    )
