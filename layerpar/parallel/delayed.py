"""The stale-adjoint variant (``layerpar.method: delayed``): exact multipliers, a few steps late.

The AL multiplier of boundary k is, at its fixed point, the next module's per-sample input
adjoint μ_k = v_{k+1} (DESIGN.md §2, step 7).  The AuxNet's multiplier heads cannot predict it
(their error stays at 1.0: docs/parity.md), and per-sample multipliers cannot be stored across
epochs.  They *can* be kept for a few steps: module k keeps the forward graph of each batch and
takes its update when v_{k+1} of that batch arrives, one step after module k+1 used it:

    step t, module k (delay d = K−1−k):
        forward batch t on u_k = stopgrad(a_{k−1}(x_t)), with a stashed copy of θ_k
        backward of batch t−d:  L_k = (1/B) Σ_i [ <v_{k+1,i}, h_k,i> + (β/2) ||h_k,i − a_k,i||² ]
        send v_k of batch t−d to module k−1 (it uses it at step t+1)

So every module still runs at the same time on its own device (forward unlocked by the AuxNet,
no wait inside a step), sends one activation-sized message per boundary and step, and applies a
gradient that is exact backprop through the later modules evaluated on AuxNet-made inputs,
``d`` steps stale — the weight-stashing delayed-gradient scheme of PipeDream and of decoupled
parallel backprop (Huo et al., 2018), with the forward pipeline replaced by the AuxNet.  With an
oracle AuxNet (a = true h) the applied gradient is serial backprop's gradient of batch t−d at
the weights of step t−d.  The AuxNet is trained to the true state h_k (distillation), since at
the AL fixed point λ⁺ = h + (μ − v)/β = h.

A run of parallel steps ends (before a serial step, an evaluation, or a stop) with a step that
sends nothing; the forward graphs still waiting then are dropped: d updates of module k per
boundary of the run, the price of keeping every message inside its run of parallel steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.func import functional_call

from layerpar.parallel.local_loss import constraint_residual, local_loss

if TYPE_CHECKING:
    from layerpar.parallel.stage import StageWorker


@dataclass
class PendingForward:
    """A batch module k has run forward on and will update with once v_{k+1} arrives."""

    u: torch.Tensor
    """Module input (a leaf that requires grad, except on the first module)."""
    h: torch.Tensor
    """Module output, with its graph into ``weights``."""
    state: torch.Tensor | None
    """The AuxNet's prediction a_k for this batch (detached): the penalty's anchor (delayed
    method; None in the pipelined one, which has no penalty)."""
    weights: list[torch.Tensor]
    """The parameter values this forward used (stashed copies, in ``parameters()`` order)."""


def stashed_forward(
    module: nn.Module, u: torch.Tensor, shift: dict[str, torch.Tensor] | None = None
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """``module(u)`` on copies of its parameters, so later optimiser steps (in place) leave the
    graph intact and its backward gives the gradient at the weights of this forward.  With
    ``shift``, the copies are θ + shift (weight prediction: the forward runs where the weights
    are expected to be when the gradient is applied).

    Buffers run on copies too (BatchNorm's backward keeps its running statistics, which the next
    forward updates in place); their new values are written back to the module."""
    named = dict(module.named_parameters())
    shift = shift or {}
    weights = {
        name: (p.detach() + shift[name] if name in shift else p.detach().clone()).requires_grad_(p.requires_grad)
        for name, p in named.items()
    }
    buffers = {name: b.clone() for name, b in module.named_buffers()}
    h = functional_call(module, {**weights, **buffers}, (u,))
    with torch.no_grad():
        for name, live in module.named_buffers():
            live.copy_(buffers[name])
    return h, list(weights.values())


def move_gradients(module: nn.Module, weights: list[torch.Tensor]) -> None:
    """Add the gradients a stashed forward collected to the live parameters' (accumulation)."""
    for param, stashed in zip(module.parameters(), weights, strict=True):
        if stashed.grad is None:
            continue
        if param.grad is None:
            param.grad = stashed.grad
        else:
            param.grad.add_(stashed.grad)


def delayed_forward_backward(worker: StageWorker) -> None:
    """Forward this batch; update with the batch of ``worker.delay`` steps ago (the phase
    ``local_forward_backward`` of every module but the last)."""
    s = worker.state
    # Module k+1 sent v_{k+1} of the oldest pending batch in its previous step.
    adjoint_next = None
    if len(worker._pending) == worker.delay:
        oldest = worker._pending[0]
        adjoint_next = worker.comm.recv(oldest.h.shape, worker.next_rank, worker.dtype, worker.device)
    s.aux_out = worker._aux_forward()
    assert s.aux_out is not None
    u = s.x if worker.is_first else s.aux_out.states[worker.stage - 1].detach().requires_grad_(True)
    h, weights = stashed_forward(worker.module, u)
    state = s.aux_out.states[worker.stage].detach()
    worker._pending.append(PendingForward(u=u, h=h, state=state, weights=weights))
    s.h, s.state_target = h, h.detach()
    s.metrics[f"residual/{worker.stage}"] = constraint_residual(h.detach(), state)
    worker.optimizer.zero_grad(set_to_none=True)
    if adjoint_next is None:
        return
    oldest = worker._pending.popleft()
    loss = local_loss(oldest.h, oldest.state, adjoint_next, s.beta)
    loss.backward()
    move_gradients(worker.module, oldest.weights)
    s.metrics[f"local_loss/{worker.stage}"] = float(loss.detach())
    if not worker.is_first:
        assert oldest.u.grad is not None
        s.adjoint_out = oldest.u.grad * oldest.u.shape[0]
