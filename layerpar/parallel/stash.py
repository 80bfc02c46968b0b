"""Weight stashing: run a module's forward on a copy of its weights, take the backward later.

A stale method (pipelined, delayed) forwards a micro-batch now and applies its gradient a few
steps later, after optimiser steps have changed the live weights in place.  Running the forward
on stashed copies keeps the graph valid, and its backward gives the gradient *at the weights of
that forward* (PipeDream's weight stashing, Narayanan et al., 2019).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.func import functional_call


@dataclass
class PendingForward:
    """A micro-batch a module has run forward on and will update with once its adjoint arrives."""

    u: torch.Tensor
    """Module input (a leaf that requires grad, except on the first module)."""
    h: torch.Tensor
    """Module output, with its graph into ``weights``."""
    weights: list[torch.Tensor]
    """The parameter values this forward used (stashed copies, in ``parameters()`` order)."""
    anchor: torch.Tensor | None = None
    """The AuxNet's prediction a_k for this micro-batch (detached): the penalty's anchor in the
    delayed method; None in the pipelined one, which has no penalty."""
    cond: torch.Tensor | None = None
    """The micro-batch's conditioning (a denoiser's; None for a classifier)."""


def stashed_forward(
    module: nn.Module,
    u: torch.Tensor,
    shift: dict[str, torch.Tensor] | None = None,
    cond: torch.Tensor | None = None,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """``module(u)`` on copies of its parameters.  With ``shift``, the copies are θ + shift
    (weight prediction: the forward runs where the weights are expected to be when the gradient
    is applied).

    Buffers run on copies too (BatchNorm's backward keeps its running statistics, which the next
    forward updates in place); their new values are written back to the module."""
    weights, buffers = stash_copies(module, shift)
    return forward_on_copies(module, weights, buffers, u, cond), list(weights.values())


def stash_copies(
    module: nn.Module, shift: dict[str, torch.Tensor] | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The copies ``stashed_forward`` runs on: parameters (θ, or θ + shift) and buffers."""
    shift = shift or {}
    weights = {
        name: (p.detach() + shift[name] if name in shift else p.detach().clone()).requires_grad_(
            p.requires_grad
        )
        for name, p in module.named_parameters()
    }
    return weights, {name: b.clone() for name, b in module.named_buffers()}


class VersionCopies:
    """The parameter copies of the weights' current version, shared by every forward on it.

    Between two optimiser steps the weights do not change, so the M micro-batches a module
    forwards in one accumulation window can run on one copy instead of M (on a 8.8M-parameter
    module the copies were a fifth of its step).  A version is told by the tensors' in-place
    version counters, so an optimiser step, a checkpoint load or anything else that writes the
    weights in place starts a new copy.  Sharing is sound because ``move_gradients`` clears each
    copy's gradient after moving it: the next backward through the same copy starts from zero.
    """

    def __init__(self) -> None:
        self._key: tuple[int, ...] | None = None
        self._weights: dict[str, torch.Tensor] = {}

    def get(self, module: nn.Module, shift: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """Copies of ``module``'s parameters (θ + shift with a shift: never shared, since the
        shift follows the learning rate, which moves every micro-step)."""
        if shift:
            return stash_copies(module, shift)[0]
        key = tuple(v for p in module.parameters() for v in (id(p), p._version))
        if key != self._key:
            self._weights, self._key = stash_copies(module)[0], key
        return self._weights


def forward_on_copies(
    module: nn.Module,
    weights: dict[str, torch.Tensor],
    buffers: dict[str, torch.Tensor],
    u: torch.Tensor,
    cond: torch.Tensor | None = None,
) -> torch.Tensor:
    """``module(u)`` through ``stash_copies``'s copies; the buffers' new values go back to it."""
    args = (u,) if cond is None else (u, cond)
    h = functional_call(module, {**weights, **buffers}, args)
    with torch.no_grad():
        for name, live in module.named_buffers():
            live.copy_(buffers[name])
    return h


def move_gradients(module: nn.Module, weights: list[torch.Tensor]) -> None:
    """Add the gradients a stashed forward collected to the live parameters' (accumulation),
    and clear them on the copies."""
    for param, stashed in zip(module.parameters(), weights, strict=True):
        if stashed.grad is None:
            continue
        if param.grad is None:
            param.grad = stashed.grad
        else:
            param.grad.add_(stashed.grad)
        stashed.grad = None  # a copy shared with a later forward (``VersionCopies``) starts clean


def weight_staleness(module: nn.Module, stashed: list[torch.Tensor]) -> torch.Tensor:
    """||θ_now − θ_forward|| / ||θ_now||: how far the weights moved between the forward of a
    micro-batch and the update with its gradient (0 for serial backprop).  A tensor: reading it
    back is left to the metrics logger.

    ``torch.dist`` and ``norm`` reduce without a temporary per parameter: on a parameter-heavy
    module (17.6M weights, ``configs/fmnist_mlp_wide.yaml``) ``(p − w).pow(2).sum()`` took 47 ms
    per micro-batch, as long as the micro-batch's forward and backward; these take 8 ms."""
    with torch.no_grad():
        params = list(module.parameters())
        moved = torch.stack([torch.dist(p, w).square() for p, w in zip(params, stashed, strict=True)]).sum()
        size = torch.stack([p.norm().square() for p in params]).sum()
        return torch.where(size > 0, (moved / size.clamp_min(1e-300)).sqrt(), torch.zeros_like(size))


def pending_state(pending: PendingForward) -> dict[str, Any]:
    """What a checkpoint keeps of a micro-batch in flight: its input and stashed weights (the
    graph cannot be saved; ``replay_forward`` rebuilds it)."""
    return {
        "u": pending.u.detach(),
        "u_requires_grad": pending.u.requires_grad,
        "weights": [w.detach() for w in pending.weights],
        "anchor": pending.anchor,
        "cond": pending.cond,
    }


def replay_forward(module: nn.Module, saved: dict[str, Any]) -> PendingForward:
    """Rebuild a checkpointed micro-batch's forward graph: the same input through the same
    stashed weights gives the same output (BatchNorm in training mode normalises by the batch's
    own statistics).  The module's buffers are left as checkpointed: their update by this
    forward was already counted before the checkpoint."""
    u = saved["u"].clone().requires_grad_(saved["u_requires_grad"])
    names = [name for name, _ in module.named_parameters()]
    weights = {
        name: w.clone().requires_grad_(p.requires_grad)
        for name, w, p in zip(names, saved["weights"], module.parameters(), strict=True)
    }
    buffers = {name: b.clone() for name, b in module.named_buffers()}
    cond = saved.get("cond")
    h = functional_call(module, {**weights, **buffers}, (u,) if cond is None else (u, cond))
    return PendingForward(u=u, h=h, weights=list(weights.values()), anchor=saved["anchor"], cond=cond)
