"""The cost model of the schedules that hold two stages per rank (interleaved 1F1B, interleaved
zero-bubble, ZBV, DualPipeV): torch's own action order for (K, M) replayed against the profiled
stage times (``schedule_sim.py``), plus the batch and the optimiser step, as in ``costmodel.py``.
A split backward's I and W passes are each stage's profiled backward times its measured I / B and
W / B (``Profile.split``), when the profile has them."""

from __future__ import annotations

from dataclasses import replace

from layerpar.bench.costmodel import Link, Prediction, _stage_sums
from layerpar.bench.profile import Profile, partition_bounds
from layerpar.bench.schedule_sim import StageCosts, compute_s, makespan, schedule_orders, stage_rank


def predict_multistage(
    profile: Profile,
    stages: int,
    replicas: int,
    microbatches: int,
    link: Link,
    contention: float = 1.0,
    schedule: str = "interleaved1f1b",
) -> Prediction | None:
    """A two-stages-per-rank schedule of torch on ``stages`` ranks (module docstring)."""
    bounds = partition_bounds(profile, 2 * stages)
    shard = profile.batch_size // replicas
    if stages < 2 or bounds is None or shard < microbatches or microbatches < 1:
        return None
    if schedule == "dualpipev" and microbatches < 2 * stages:
        return None  # torch refuses DualPipeV with fewer micro-batches than stages
    orders = schedule_orders(schedule, stages, microbatches)
    if orders is None:
        return None
    c = contention
    forward, backward = profile.block_times(shard / microbatches)
    acts = profile.activation_bytes_at(shard / microbatches)
    stage_backward = tuple(c * b for b in _stage_sums(backward, bounds))
    shares = profile.split_shares(2 * stages, shard / microbatches)
    if shares is not None:  # the measured cost of the zero-bubble schedules' split backward
        input_grad = tuple(b * share for b, share in zip(stage_backward, shares[0]))
        weight_grad = tuple(b * share for b, share in zip(stage_backward, shares[1]))
    else:
        input_grad = weight_grad = ()
    costs = StageCosts(
        forward_s=tuple(c * f for f in _stage_sums(forward, bounds)),
        backward_s=stage_backward,
        input_grad_s=input_grad,
        weight_grad_s=weight_grad,
        send_s=tuple(link.p2p(acts[b - 1]) for b in bounds[1:-1]),
        send_busy_s=tuple(link.sender_busy(acts[b - 1]) for b in bounds[1:-1]),
        # torch's runtime on a rank (profile_runtime.py), spread over the rank's actions
        per_action_s=c * profile.runtime_overhead(schedule, stages, microbatches) / len(orders[0]),
    )

    def rank_of(stage: int) -> int:
        return stage_rank(schedule, stage, stages)

    pipeline = makespan(orders, costs, rank_of)
    virtual_bytes = _stage_sums([float(p) for p in profile.param_bytes], bounds)
    rank_bytes = [sum(b for s, b in enumerate(virtual_bytes) if rank_of(s) == r) for r in range(stages)]
    update = [link.allreduce(b, replicas) + profile.sgd_s_per_byte * b for b in rank_bytes]
    slowest = max(range(stages), key=lambda r: update[r])
    no_comm = makespan(orders, replace(costs, send_s=(0.0,) * len(costs.send_s), send_busy_s=()), rank_of)
    sync = link.allreduce(rank_bytes[slowest], replicas)
    return Prediction(
        schedule,
        stages,
        replicas,
        stages * replicas,
        microbatches,
        profile.batch_s + pipeline + update[slowest],
        no_comm + update[slowest] - sync,
        pipeline - no_comm + sync,
        bounds,
        tuple(f + b for f, b in zip(costs.forward_s, costs.backward_s)),
        tuple(sum(compute_s(a, costs) for a in orders[r]) for r in range(stages)),
    )
