"""The oracle AuxNet: true serial activations and per-sample adjoints (a test instrument).

With ``a_k = h_k`` and ``m_k = B · ∂ℓ/∂h_k`` the gradient of every local loss equals the serial
backprop gradient exactly; tests use this to prove the layer-parallel machinery is exact.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from layerpar.auxnet.network import AuxOutput


class OracleAux:
    """Predicts boundary states and multipliers by a serial pass through ``stages``.

    ``stages`` are the *current* modules (shared with, or identical to, the ones being trained).
    BatchNorm buffers are restored afterwards, so the oracle pass leaves no trace.
    """

    def __init__(self, stages: Sequence[nn.Module], loss_fn: Callable[..., torch.Tensor]) -> None:
        self.stages = list(stages)
        self.loss_fn = loss_fn

    def __call__(
        self, x: torch.Tensor, y: torch.Tensor, upto: int | None = None, cond: torch.Tensor | None = None
    ) -> AuxOutput:
        saved = [{k: v.clone() for k, v in s.state_dict().items()} for s in self.stages]
        args = () if cond is None else (cond,)
        h = x
        boundaries: list[torch.Tensor] = []
        for stage in self.stages[:-1]:
            h = stage(h.detach() if not boundaries else h, *args)
            boundaries.append(h)
        loss = self.loss_fn(self.stages[-1](h, *args), y)
        adjoints = torch.autograd.grad(loss, boundaries) if boundaries else ()
        for stage, state in zip(self.stages, saved):
            stage.load_state_dict(state)
        batch = x.shape[0]
        states = [b.detach() for b in boundaries]
        multipliers: list[torch.Tensor | None] = [batch * g.detach() for g in adjoints]
        return AuxOutput(states, multipliers)
