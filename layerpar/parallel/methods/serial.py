"""Serial backprop across the modules: the baseline, the oracle, and the serial phases of the
hybrid schedules (warm-up, final epochs, ``serial_every``).

    serial_forward   (stage order)    u = x or h_{k−1} from module k−1; h_k = F_k(u); send h_k
    serial_backward  (reverse order)  ∂ℓ/∂h_k from module k+1; backward; send ∂ℓ/∂u to k−1

With an AuxNet, its predictions are distilled towards the true activations and per-sample
adjoints meanwhile (targets λ = h_k, μ = B·∂ℓ/∂h_k).  ``layerpar.method: serial`` makes every
step serial (model parallelism without overlap; ``train.mode: serial`` runs it on one module).
"""

from __future__ import annotations

import torch

from layerpar.parallel.context import StageContext
from layerpar.parallel.local_loss import constraint_residual
from layerpar.parallel.methods.base import END_PHASES, UPDATE_PHASES, AuxTargets, Method, Phase, Program

SERIAL_PASS: Program = (
    Phase("serial_step", "serial_forward"),
    Phase("serial_step", "serial_backward", reverse=True),
)


class Serial(Method):
    name = "serial"
    serial_only = True
    sends_forward = "h_k (serial forward)"
    sends_backward = "∂ℓ/∂h_{k−1} (serial backward)"
    program = SERIAL_PASS + UPDATE_PHASES + END_PHASES

    def __init__(self, worker: StageContext) -> None:
        super().__init__(worker)
        self._u: torch.Tensor | None = None
        self._h: torch.Tensor | None = None

    def forward_backward(self) -> None:
        self.serial_forward()
        self.serial_backward()

    def serial_forward(self) -> None:
        w, s = self.worker, self.state
        if w.aux is not None and w.aux.trains and not w.is_last:
            s.aux_out = w.aux.predict()
        u = s.x if w.is_first else w.recv_forward(s.x.shape[0])
        h = w.forward(u)
        self._u, self._h = u, h
        if w.is_last:
            w.task_loss(h, s.y).backward()
            self._send_input_grad()
        else:
            w.send_forward(h.detach())

    def serial_backward(self) -> None:
        w, s = self.worker, self.state
        if w.is_last:
            return
        assert self._h is not None
        grad = w.recv_backward(self._h.shape)
        self._h.backward(grad.to(self._h.dtype))
        self._send_input_grad()
        h = self._h.detach()
        s.aux_targets = AuxTargets(state=h, multiplier=grad * h.shape[0])
        if s.aux_out is not None:
            s.metrics[f"residual/{w.stage}"] = constraint_residual(h, s.aux_out.states[w.stage].detach())

    def _send_input_grad(self) -> None:
        if not self.worker.is_first:
            assert self._u is not None and self._u.grad is not None
            self.worker.send_backward(self._u.grad)
