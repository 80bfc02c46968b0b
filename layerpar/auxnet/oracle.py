"""The oracle AuxNet: true serial activations and per-sample adjoints (a test instrument).

With ``a_k = h_k`` and ``m_k = B · ∂ℓ/∂h_k`` the gradient of every local loss equals the serial
backprop gradient exactly; tests use this to prove the layer-parallel machinery is exact.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.func import functional_call

from layerpar.auxnet.network import AuxOutput


class OracleAux:
    """Predicts boundary states and multipliers by a serial pass through ``stages``.

    ``stages`` are the *current* modules (shared with, or identical to, the ones being trained).
    The pass runs on copies of their buffers (``functional_call``), so it leaves no trace: it
    writes nothing in place, not even BatchNorm's running statistics, which a module's pending
    graph may hold for its backward.
    """

    def __init__(self, stages: Sequence[nn.Module], loss_fn: Callable[..., torch.Tensor]) -> None:
        self.stages = list(stages)
        self.loss_fn = loss_fn

    def __call__(
        self, x: torch.Tensor, y: torch.Tensor, upto: int | None = None, cond: torch.Tensor | None = None
    ) -> AuxOutput:
        args = () if cond is None else (cond,)
        h = x
        boundaries: list[torch.Tensor] = []
        for stage in self.stages[:-1]:
            h = _on_buffer_copies(stage, (h.detach() if not boundaries else h, *args))
            boundaries.append(h)
        loss = self.loss_fn(_on_buffer_copies(self.stages[-1], (h, *args)), y)
        adjoints = torch.autograd.grad(loss, boundaries) if boundaries else ()
        batch = x.shape[0]
        states = [b.detach() for b in boundaries]
        multipliers: list[torch.Tensor | None] = [batch * g.detach() for g in adjoints]
        return AuxOutput(states, multipliers)


def _on_buffer_copies(stage: nn.Module, args: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """``stage(*args)`` with its own parameters and copies of its buffers."""
    state = {**dict(stage.named_parameters()), **{n: b.clone() for n, b in stage.named_buffers()}}
    return functional_call(stage, state, args)
