"""The penalty method (``layerpar.method: penalty``): AuxNet inputs, local quadratic penalty.

Every module works at the same time on the AuxNet's prediction of its input (forward unlocking)
and steps on its local loss at once (backward and update unlocking), DESIGN.md §2:

    forward_backward   u = stopgrad(a_{k−1}(x)); h = F_k(u);
                       L_k = (1/B) Σ_i [<m_k,i, h_k,i> + (β/2)||h_k,i − a_k,i||²]   (m ≡ 0 here)
                       backward; v_k = B·∂L_k/∂u               (the last module: the task loss)
    (update)           replicas all-reduce; optimiser step — no wait for any other module
    send_adjoint       v_k to module k−1
    receive_adjoint    v_{k+1}; AuxNet targets λ⁺ = h + (m − v)/β, μ⁺ = v
    (aux)              AuxNet loss at boundary k; all-reduce; identical Adam step

The augmented-Lagrangian method (``al.py``) is this with the AuxNet's multipliers m_k.
"""

from __future__ import annotations

import torch

from layerpar.auxnet import AuxOutput
from layerpar.parallel.context import StageContext
from layerpar.parallel.local_loss import al_targets, constraint_residual, local_loss
from layerpar.parallel.methods.base import (
    AUX_PHASES,
    END_PHASES,
    UPDATE_PHASES,
    AuxTargets,
    Method,
    Phase,
    predicted_input,
)


class Penalty(Method):
    name = "penalty"
    needs_aux = True
    default_warmup_epochs = 1.0
    default_serial_final_epochs = 0.5
    sends_backward = "v_k = B·∂L_k/∂u_k (per-sample input adjoint)"
    program = (
        (Phase("method", "forward_backward"),)
        + UPDATE_PHASES
        + (Phase("method", "send_adjoint"), Phase("method", "receive_adjoint"))
        + AUX_PHASES
        + END_PHASES
    )

    def __init__(self, worker: StageContext) -> None:
        super().__init__(worker)
        self._h: torch.Tensor | None = None
        self._adjoint: torch.Tensor | None = None

    def multiplier(self, out: AuxOutput) -> torch.Tensor | None:
        """m_k of this boundary: none for the penalty method."""
        return None

    def forward_backward(self) -> None:
        w, s = self.worker, self.state
        s.aux_out = w.aux.predict() if w.aux is not None else None  # None: one module (K = 1)
        u = s.x if w.is_first else predicted_input(s.aux_out, w.stage)
        h = w.forward(u)
        if w.is_last:
            loss = w.task_loss(h, s.y)
        else:
            assert s.aux_out is not None
            anchor = s.aux_out.states[w.stage].detach()
            loss = local_loss(h, anchor, self.multiplier(s.aux_out), s.beta)
            s.metrics[f"residual/{w.stage}"] = constraint_residual(h.detach(), anchor)
        loss.backward()
        s.metrics[f"local_loss/{w.stage}"] = loss.detach()
        self._h = h.detach()
        self._adjoint = None if w.is_first or u.grad is None else u.grad * u.shape[0]

    def send_adjoint(self) -> None:
        if self._adjoint is not None:
            self.worker.send_backward(self._adjoint)

    def receive_adjoint(self) -> None:
        w, s = self.worker, self.state
        if w.is_last:
            return
        assert self._h is not None and s.aux_out is not None
        adjoint_next = w.recv_backward(self._h.shape)
        state, multiplier = al_targets(
            self._h, self.multiplier(s.aux_out), adjoint_next, s.beta, w.config.layerpar.al_step_clip
        )
        s.aux_targets = AuxTargets(state, multiplier)
