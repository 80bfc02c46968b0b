"""The pipelined method (``layerpar.method: pipelined``, the default): true inputs one step
late, true adjoints a few steps late — no AuxNet.

Module k (0-based) works on micro-batch t − k at micro-step t (``pipeline_schedule``):

    step t, module k:
        receive h_{k−1} of micro-batch t−k (module k−1 sent it in its step t−1)
        forward it, on a stashed copy of θ_k (``stash.py``)        (module 0: the raw micro-batch t)
        last module: loss of micro-batch t−(K−1), backward at once
        other modules: send h_k forward at once (read in step t+1), then receive the adjoint
            ∂ℓ/∂h_k that module k+1 sent in its step t−1 and backward the micro-batch forwarded
            D_k = 2(K−1−k) steps ago with it
        (update); send ∂ℓ/∂u_k backward (read in step t+1)

Each batch of train.batch_size samples (serial backprop's batch, same samples and pixels) goes
through in M micro-batches (``layerpar.accumulate``; default the smallest power of two
≥ 2(K−1)).  Module k sums the gradients of the M micro-batches whose backward falls in one
window of M micro-steps and steps its optimiser once per window; its windows are aligned with
the batches, its backwards are D_k + k micro-steps behind them, so a window holds micro-batches
of up to two consecutive batches.  A gradient is then at most ⌈D_k/M⌉ weight versions old —
one with the default M (the double-buffered weights of PipeDream-2BW, Narayanan et al., 2021).

This is asynchronous pipeline parallelism with weight stashing (PipeDream, Narayanan et al.,
2019; the delayed gradients of Huo et al., 2018): every update is exact backprop of its
micro-batches through the weights every module used for them.  A run of parallel steps starts
empty (module k idles for its first k steps: the fill) and ends (an evaluation) with a step that
sends nothing: the micro-batches in flight are dropped.  A stop or a checkpoint does not end it:
the micro-batches in flight and the last messages are checkpointed (``state_dict``), so a
resumed run goes on exactly.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from typing import Any

import torch

from layerpar.config import OptimConfig, RunConfig
from layerpar.errors import ConfigError
from layerpar.parallel.context import StageContext
from layerpar.parallel.methods.base import END_PHASES, UPDATE_PHASES, Method, Phase
from layerpar.parallel.pipeline_schedule import pipeline_delay, pipelined_tick
from layerpar.parallel.stash import PendingForward, move_gradients, pending_state, weight_staleness


def default_micro_batches(stages: int) -> int:
    """The smallest power of two ≥ 2(K−1): no gradient more than one weight version old."""
    micro = 1
    while micro < 2 * (stages - 1):
        micro *= 2
    return micro


def compensated_momentum(momentum: float, delay: float) -> float:
    """Explicit momentum for a module whose gradients arrive ``delay`` optimiser steps late.

    Delay acts as implicit momentum (Mitliagkas et al., 2016, "Asynchrony begets momentum"):
    roughly, a delay of D steps multiplies the momentum's time constant 1/(1−μ) by D+1.  This
    keeps the total at the serial value: 1 − (1−μ)(1+D), floored at 0."""
    return max(0.0, 1.0 - (1.0 - momentum) * (1 + delay))


class Pipelined(Method):
    name = "pipelined"
    stale = True
    micro_batched = True
    allows_serial_every = False
    sends_forward = "h_k of micro-batch t−k"
    sends_backward = "∂ℓ/∂h_{k−1} of the micro-batch forwarded 2(K−1−k) steps ago"
    program = (Phase("method", "forward_backward"),) + UPDATE_PHASES + (Phase("method", "send"),) + END_PHASES

    def __init__(self, worker: StageContext) -> None:
        super().__init__(worker)
        self._pending: deque[PendingForward] = deque()
        self._labels: deque[torch.Tensor] = deque()
        """Targets of the micro-batches still on their way to the last module."""
        self._conds: deque[torch.Tensor] = deque()
        """Conditioning (a denoiser's) of the micro-batches still on their way to this module."""
        self._forward_out: torch.Tensor | None = None
        self._adjoint: torch.Tensor | None = None

    # ------------------------------------------------------------------ declarations

    @classmethod
    def micro_batches(cls, config: RunConfig) -> int:
        if config.train.mode == "serial" or config.parallel.stages == 1:
            return 1
        accumulate = config.layerpar.accumulate
        return accumulate if accumulate is not None else default_micro_batches(config.parallel.stages)

    @classmethod
    def check_config(cls, config: RunConfig) -> None:
        lp, micro, replicas = config.layerpar, cls.micro_batches(config), config.parallel.replicas
        if lp.serial_every:
            raise ConfigError(
                f"layerpar.method={cls.name} keeps K−1 micro-batches in flight, and every serial step drains "
                f"the pipeline: set layerpar.serial_every=0 (got {lp.serial_every})"
            )
        if micro > 1 and (lp.warmup_epochs or lp.serial_final_epochs):
            raise ConfigError(
                f"layerpar.method={cls.name} with {micro} micro-batches per step runs no serial phases: "
                f"set layerpar.warmup_epochs=0 and layerpar.serial_final_epochs=0 (got "
                f"{lp.warmup_epochs} and {lp.serial_final_epochs}), or layerpar.accumulate=1"
            )
        batch = config.train.batch_size
        if micro > 1 and batch % (micro * replicas):
            raise ConfigError(
                f"train.batch_size={batch} does not split into {micro} micro-batches x {replicas} replicas: "
                f"use a multiple of {micro * replicas} or set layerpar.accumulate"
            )
        if micro > 1 and batch // (micro * replicas) < 2:
            raise ConfigError(
                f"train.batch_size={batch} in {micro} micro-batches x {replicas} replicas leaves 1 sample "
                f"per micro-batch (BatchNorm needs 2): raise train.batch_size to {2 * micro * replicas} or "
                "set a smaller layerpar.accumulate"
            )

    @classmethod
    def optimizer_config(cls, config: RunConfig, stage: int) -> OptimConfig:
        if not config.layerpar.compensate_momentum:
            return config.optim
        steps_late = pipeline_delay(stage, config.parallel.stages) / cls.micro_batches(config)
        return dataclasses.replace(
            config.optim, momentum=compensated_momentum(config.optim.momentum, steps_late)
        )

    # ------------------------------------------------------------------ state

    def end_run(self) -> None:
        self._pending.clear()
        self._labels.clear()
        self._conds.clear()
        self._forward_out = self._adjoint = None

    def pending(self) -> deque[PendingForward]:
        return self._pending

    def in_flight(self) -> int:
        return len(self._pending) + len(self._labels)

    def state_dict(self) -> dict[str, Any]:
        """The micro-batches in flight and the messages sent in the last step (read by the
        neighbours in the next one), so a resumed run goes on exactly where this one was."""
        return {
            "pending": [pending_state(p) for p in self._pending],
            "labels": list(self._labels),
            "conds": list(self._conds),
            "forward_out": self._forward_out,
            "adjoint": self._adjoint,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.reset()
        self._pending.extend(self.worker.replay_forward(saved) for saved in state.get("pending", []))
        self._labels.extend(state.get("labels", []))
        self._conds.extend(state.get("conds", []))
        self._forward_out, self._adjoint = state.get("forward_out"), state.get("adjoint")

    def outgoing(self) -> list[tuple[str, torch.Tensor]]:
        sends = [] if self._forward_out is None else [("forward", self._forward_out)]
        if self._adjoint is not None and not self.worker.is_first:
            sends.append(("backward", self._adjoint))
        return sends

    @property
    def delay(self) -> int:
        return pipeline_delay(self.worker.stage, self.worker.stages)

    # ------------------------------------------------------------------ phases

    def forward_backward(self) -> None:
        w, s = self.worker, self.state
        self._forward_out = self._adjoint = None
        tick = pipelined_tick(w.stage, w.stages, w.run_step)
        u = cond = None
        if w.is_first:
            u, cond = s.x, s.cond
        else:
            if s.cond is not None:
                self._conds.append(s.cond)
            if tick.forward is not None:
                u = w.recv_forward(s.x.shape[0])
                cond = self._conds.popleft() if self._conds else None
        if w.is_last:
            self._labels.append(s.y)
            if u is not None:
                loss = w.task_loss(w.forward(u, cond), self._labels.popleft())
                with w.clock("backward"):
                    loss.backward()
                s.metrics[f"local_loss/{w.stage}"] = loss.detach()
                self._adjoint = u.grad
            return
        if u is not None:
            shift = self._predicted_shift() if w.config.layerpar.predict_weights else None
            h, weights = w.stashed_forward(u, shift, cond)
            self._pending.append(PendingForward(u=u, h=h, weights=weights, cond=cond))
            self._forward_out = h.detach()
            self._send_forward()
        if tick.backward is None:
            return
        # Read after the forward, which does not need it: the wait overlaps this module's forward.
        oldest = self._pending.popleft()
        adjoint_next = w.recv_backward(oldest.h.shape)
        with w.clock("backward"):
            oldest.h.backward(adjoint_next.to(oldest.h.dtype))
        self._finish_backward(oldest)

    def _finish_backward(self, oldest: PendingForward) -> None:
        """The oldest micro-batch's backward is done: its gradients into the module (this
        window's sum) and its input adjoint out to module k − 1."""
        w, s = self.worker, self.state
        with w.clock("stash"):
            move_gradients(w.module, oldest.weights)
            if w.opens_window:
                # Once per optimiser step, not per micro-batch: a diagnostic, and on a small
                # module its per-parameter reductions cost 1.5 ms a call (1 % of a DiT micro-step).
                s.metrics[f"weight_staleness/{w.stage}"] = weight_staleness(w.module, oldest.weights)
        if not w.is_first:
            self._adjoint = oldest.u.grad

    def _send_forward(self) -> None:
        """h_k out as soon as it exists, before this step's backward: module k+1's next step
        needs nothing else, so it starts while this module is still in its backward (neighbours
        are not in lock-step at every micro-step; the messages and the updates are the same)."""
        if self._forward_out is not None and not self.state.final:
            self.worker.send_forward(self._forward_out)

    def send(self) -> None:
        w = self.worker
        if self.state.final:
            return  # no later step of this run would read it
        # h_k went out in forward_backward, as soon as it existed.
        if self._adjoint is not None and not w.is_first:
            w.send_backward(self._adjoint)

    def _predicted_shift(self) -> dict[str, torch.Tensor]:
        """−D·lr·b per parameter: where SGD's momentum b carries θ_k in the D optimiser steps
        before this micro-batch's gradient is applied (the weight prediction of SpecTrain, Chen
        et al., 2018), so the gradient is taken near the weights it updates."""
        w = self.worker
        lr = w.optimizer.param_groups[0]["lr"]
        steps_late = self.delay / w.accumulate
        shift = {}
        for name, param in w.module.named_parameters():
            buffer = w.optimizer.state.get(param, {}).get("momentum_buffer")
            if buffer is not None:
                shift[name] = -steps_late * lr * buffer
        return shift
