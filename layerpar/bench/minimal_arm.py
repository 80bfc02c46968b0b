"""The ``layerpar-minimal`` arm: the ``layerpar`` arm's math as one plain loop over torch.distributed.

Same model, cut points, AuxNet (``build_setup``), optimisers, batches and step (penalty or AL,
DESIGN.md §2, steps 1-8) as the ``layerpar`` arm, but none of layerpar's runtime classes: no
StageWorker, runner or Comm, no metrics.  The gap between the two arms' step times is the
framework's overhead.  ``tests/integration/test_bench_arms.py`` checks that one step of each
gives the same parameters.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from layerpar.bench.common import (
    StepTimes,
    batch_plan,
    broadcast_bounds,
    forward,
    loss_fn,
    step_batch,
    sum_replicated_grads,
    time_steps,
)
from layerpar.config import RunConfig
from layerpar.errors import ConfigError
from layerpar.parallel.optim import make_aux_optimizer, make_optimizer
from layerpar.parallel.setup import build_setup


def build_step(config: RunConfig, total_steps: int) -> tuple[Callable[[int], None], nn.Module, nn.Module]:
    """This rank's training step ``step(i)``, its module and its AuxNet replica."""
    rank, world = dist.get_rank(), dist.get_world_size()
    if world < 2 or config.parallel.stages != world:
        raise ConfigError(
            f"layerpar-minimal needs K >= 2 processes and parallel.stages = K "
            f"(got K={world}, stages={config.parallel.stages})"
        )
    if config.layerpar.method in ("delayed", "pipelined", "corrected", "local"):
        raise ConfigError(
            "layerpar-minimal writes out the penalty/AL step only; bench it with "
            "--set layerpar.method=al (or penalty), or drop the layerpar-minimal arm"
        )
    setup = build_setup(config, torch.device("cpu"), broadcast_bounds(config))
    task_loss = loss_fn(config)
    module, aux = setup.partition.stages[rank], setup.aux
    assert aux is not None
    optimizer, scheduler = make_optimizer(module.parameters(), config.optim, total_steps)
    aux_optimizer = make_aux_optimizer(aux, config.aux)
    params = list(aux.parameters())
    first, last = rank == 0, rank == world - 1
    beta, clip, gamma = config.layerpar.beta, config.layerpar.al_step_clip, config.layerpar.gamma
    al = config.layerpar.method == "al"
    plan = batch_plan(config)

    def step(i: int) -> None:
        x, y, cond = step_batch(plan, i, setup.dtype)
        batch = x.shape[0]
        module.train()
        aux.train()
        # 1-4. Input: x, or the AuxNet's prediction of it; local loss; backward.  A denoiser's
        # AuxNet and module both take the batch's conditioning.
        out = aux(x, upto=min(rank, world - 2)) if cond is None else aux(x, cond, upto=min(rank, world - 2))
        u = x if first else out.states[rank - 1].detach().requires_grad_(True)
        m = out.multipliers[rank] if al and not last else None  # penalty: m ≡ 0
        h = forward(module, u, cond)
        optimizer.zero_grad(set_to_none=True)
        if last:
            loss = task_loss(h, y)
        else:
            loss = (beta / 2) * (h - out.states[rank].detach()).pow(2).sum()
            if m is not None:
                loss = loss + (m.detach() * h).sum()
            loss = loss / batch
        loss.backward()
        sum_replicated_grads([module])  # a denoiser's embedder replicas: serial's gradient
        # 5. Update this module at once.  6. Send the per-sample input adjoint back.
        optimizer.step()
        scheduler.step()
        send = None
        if not first:
            assert u.grad is not None
            send = dist.isend((u.grad * batch).contiguous(), rank - 1)
        # 7-8. With the next module's adjoint v: λ⁺ = h + (m − v)/β, μ⁺ = v; AuxNet loss at k.
        aux_optimizer.zero_grad(set_to_none=True)
        if not last:
            v = torch.empty_like(h)
            dist.recv(v, rank + 1)
            shift = ((m.detach() if m is not None else 0.0) - v) / beta
            if clip is not None:
                shift = shift.clamp(-clip, clip)
            aux_loss = (out.states[rank] - (h.detach() + shift)).pow(2).sum() / batch
            if m is not None and gamma > 0:
                aux_loss = aux_loss + gamma * ((m - v).pow(2).sum() / batch)
            aux_loss.backward()
        # All-reduce the AuxNet gradients in one flat bucket (sum over boundaries), then step.
        flat = torch.cat(
            [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params]
        )
        dist.all_reduce(flat)
        offset = 0
        for p in params:
            p.grad = flat[offset : offset + p.numel()].view_as(p)
            offset += p.numel()
        aux_optimizer.step()
        if send is not None:
            send.wait()

    return step, module, aux


def arm_layerpar_minimal(config: RunConfig, warmup: int, steps: int, **_: Any) -> StepTimes:
    """The ``layerpar-minimal`` arm: ``build_step``'s step, timed."""
    return time_steps(build_step(config, warmup + steps)[0], warmup, steps)
