"""The stale-adjoint variant (``layerpar.method: delayed``): exact multipliers, a few steps late.

The AL multiplier of boundary k is, at its fixed point, the next module's per-sample input
adjoint μ_k = v_{k+1} (DESIGN.md §2, step 7).  The AuxNet's multiplier heads cannot predict it
(docs/parity.md), and per-sample multipliers cannot be stored across epochs.  They *can* be
kept for a few steps: module k keeps the forward graph of each micro-batch (weights stashed,
``stash.py``) and takes its update when v_{k+1} of it arrives (``pipeline_schedule.delayed_tick``):

    step t, module k (delay d = K−1−k):
        forward batch t on u_k = stopgrad(a_{k−1}(x_t))
        backward of batch t−d:  L_k = (1/B) Σ_i [ <v_{k+1,i}, h_k,i> + (β/2) ||h_k,i − a_k,i||² ]
        send v_k of batch t−d to module k−1 (it uses it at step t+1)

Every module still runs at the same time (forward unlocked by the AuxNet, no wait inside a
step) and sends one activation-sized message per boundary and step.  With an oracle AuxNet the
applied gradient is serial backprop's gradient of batch t−d at the weights of step t−d.  The
AuxNet is distilled to the true state h_k, since at the AL fixed point λ⁺ = h + (μ − v)/β = h.
A run of parallel steps ends with a step that sends nothing; the graphs still waiting are
dropped (d updates of module k per run).
"""

from __future__ import annotations

from collections import deque
from typing import Any

import torch

from layerpar.parallel.context import StageContext
from layerpar.parallel.local_loss import constraint_residual, local_loss
from layerpar.parallel.methods.base import (
    AUX_PHASES,
    END_PHASES,
    UPDATE_PHASES,
    AuxTargets,
    Method,
    Phase,
    predicted_input,
)
from layerpar.parallel.pipeline_schedule import delayed_tick
from layerpar.parallel.stash import PendingForward, move_gradients, pending_state


class Delayed(Method):
    name = "delayed"
    needs_aux = True
    stale = True
    default_warmup_epochs = 1.0
    default_serial_final_epochs = 0.5
    sends_backward = "v_k = B·∂L_k/∂u_k of the micro-batch K−1−k steps old"
    program = (
        (Phase("method", "forward_backward"),)
        + UPDATE_PHASES
        + (Phase("method", "send"),)
        + AUX_PHASES
        + END_PHASES
    )

    def __init__(self, worker: StageContext) -> None:
        super().__init__(worker)
        self._pending: deque[PendingForward] = deque()
        self._adjoint: torch.Tensor | None = None

    def end_run(self) -> None:
        self._pending.clear()
        self._adjoint = None

    def state_dict(self) -> dict[str, Any]:
        """The forwards waiting for their adjoint, and the adjoint sent in the last step."""
        return {"pending": [pending_state(p) for p in self._pending], "adjoint": self._adjoint}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.reset()
        self._pending.extend(self.worker.replay_forward(saved) for saved in state.get("pending", []))
        self._adjoint = state.get("adjoint")

    def outgoing(self) -> list[tuple[str, torch.Tensor]]:
        if self._adjoint is None or self.worker.is_first:
            return []
        return [("backward", self._adjoint)]

    def pending(self) -> deque[PendingForward]:
        return self._pending

    def in_flight(self) -> int:
        return len(self._pending)

    def forward_backward(self) -> None:
        w, s = self.worker, self.state
        self._adjoint = None
        tick = delayed_tick(w.stage, w.stages, w.run_step)
        # Module k+1 sent v_{k+1} of the oldest pending micro-batch in its previous step.
        adjoint_next = None
        if not w.is_last and tick.backward is not None:
            adjoint_next = w.recv_backward(self._pending[0].h.shape)
        s.aux_out = w.aux.predict() if w.aux is not None else None  # None: one module (K = 1)
        u = s.x if w.is_first else predicted_input(s.aux_out, w.stage)
        if w.is_last:
            loss = w.task_loss(w.forward(u), s.y)
            loss.backward()
            s.metrics[f"local_loss/{w.stage}"] = loss.detach()
            self._adjoint = None if u.grad is None else u.grad * u.shape[0]
            return
        h, weights = w.stashed_forward(u)
        assert s.aux_out is not None
        anchor = s.aux_out.states[w.stage].detach()
        self._pending.append(PendingForward(u=u, h=h, weights=weights, anchor=anchor, cond=s.cond))
        s.aux_targets = AuxTargets(state=h.detach(), multiplier=None)
        s.metrics[f"residual/{w.stage}"] = constraint_residual(h.detach(), anchor)
        if adjoint_next is None:
            return
        oldest = self._pending.popleft()
        assert oldest.anchor is not None
        loss = local_loss(oldest.h, oldest.anchor, adjoint_next.to(oldest.h.dtype), s.beta)
        loss.backward()
        move_gradients(w.module, oldest.weights)
        s.metrics[f"local_loss/{w.stage}"] = loss.detach()
        if not w.is_first:
            assert oldest.u.grad is not None
            self._adjoint = oldest.u.grad * oldest.u.shape[0]

    def send(self) -> None:
        if self.state.final or self._adjoint is None or self.worker.is_first:
            return  # no later step of this run would read it, or nothing is due yet
        self.worker.send_backward(self._adjoint)
