"""Predict, then correct (``layerpar.method: corrected``; issue 11, build items 2–4): the
pipelined method plus an auxiliary head per boundary whose gradient predicts the adjoint now.

The pipelined method updates module k with the true adjoint v of a micro-batch D_k = 2(K−1−k)
micro-steps after its forward: exact, but late.  Here module k also has a local head
(``auxnet/adjoint_head.py``) on its own output h_k and the label, and

    at the forward of micro-batch j:   apply  Jᵀ m̂_j   (m̂_j: the head's prediction of v_j)
    when v_j arrives (D_k steps later): apply  Jᵀ (v_j − m̂_j)       (on the same stashed graph)

m̂ = c_k · Gᵀ(p̂ − onehot(y)), the later modules' mean Jacobian fitted to the arriving adjoints
applied to the head's label error (``predictor: linear``), or c_k · ∇_h CE(head_k(h_j), y_j)
(``gradient``); c_k is calibrated by least squares against the arriving adjoints.

so the two parts of every micro-batch sum to the pipelined method's exact delayed gradient Jᵀ v_j
(J: module k's Jacobian at the weights of the forward).  A good predictor moves most of each
update to the forward's step (less staleness); a useless one is calibrated to c = 0 and the
method *is* the pipelined method.  Module k−1 receives the exact adjoint Jᵤᵀ v_j: the
prediction's share of u's gradient is completed, not replaced, by the correction.

``layerpar.correct: false`` keeps the prediction and drops the correction: a local classifier
term on every boundary (deep supervision, DGL's loss) on top of the true delayed gradient.  Such
a kept term need not be applied at the forward: ``layerpar.head_term: delayed`` adds it to the
true adjoint when that arrives, Jᵀ(v + α m̂) in one backward: the same sum, applied D_k
micro-steps later.

Costs over the pipelined method: the head's forward and backward, and one more backward of the
module per micro-batch (the prediction's; skipped with ``predictor_scale: 0`` or a delayed
head term).  The last module
has the true loss at once and no head.  Micro-batches still in flight when a run of parallel
steps ends (an evaluation) keep their applied prediction uncorrected, as they lose their delayed
gradient in the pipelined method.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Any

import torch

from layerpar.auxnet.adjoint_head import PREDICTORS, AdjointHead, Prediction
from layerpar.config import RunConfig
from layerpar.data.datasets import dataset_info
from layerpar.errors import ConfigError
from layerpar.parallel.context import StageContext
from layerpar.parallel.methods.pipelined import Pipelined
from layerpar.parallel.pipeline_schedule import pipelined_tick
from layerpar.parallel.stash import PendingForward, move_gradients

HEAD_SEED = 7919
"""Seeds a boundary head's initial weights (with the run's seed and the stage)."""

HEAD_TERMS = ("forward", "delayed")
"""When a kept head term is applied (``layerpar.head_term``)."""

UPDATE_COSINE_EVERY = 16
"""Run steps between two measurements of ``prediction_update_cosine/k``: cos(Jᵀ m̂, Jᵀ v), the
update the predictor drives against the exact gradient of the same micro-batch and weights."""


def _flat(grads: Iterable[torch.Tensor | None]) -> torch.Tensor:
    return torch.cat([g.flatten() for g in grads if g is not None])


class Corrected(Pipelined):
    name = "corrected"
    sends_backward = "∂ℓ/∂h_{k−1} of the micro-batch forwarded 2(K−1−k) steps ago (prediction + correction)"

    def __init__(self, worker: StageContext) -> None:
        super().__init__(worker)
        self._head: AdjointHead | None = None
        self._predictions: deque[tuple[Prediction, torch.Tensor]] = deque()
        """(prediction, scale applied) of every pending micro-batch, oldest first."""
        self._head_labels: deque[torch.Tensor] = deque()
        """Labels of the micro-batches still on their way to this module."""

    @classmethod
    def auxiliary(cls) -> str:
        return "no AuxNet; a classifier head per boundary predicts its adjoint"

    @classmethod
    def check_config(cls, config: RunConfig) -> None:
        super().check_config(config)
        if config.is_diffusion or config.data.factory or config.train.loss:
            raise ConfigError(
                "layerpar.method=corrected predicts adjoints with a classifier head on the built-in "
                "datasets' class labels (cross-entropy): use layerpar.method=pipelined for a denoiser, "
                "your own data (data.factory) or your own loss (train.loss)"
            )
        predictor = config.layerpar.predictor
        if predictor not in PREDICTORS:
            raise ConfigError(
                f"layerpar.predictor={predictor!r} is not a predictor; valid: {', '.join(PREDICTORS)}"
            )
        scale = config.layerpar.predictor_scale
        if scale is not None and scale < 0:
            raise ConfigError(f"layerpar.predictor_scale={scale} must be ≥ 0, or null (calibrated)")
        head_term = config.layerpar.head_term
        if head_term not in HEAD_TERMS:
            raise ConfigError(f"layerpar.head_term={head_term!r}: valid: {', '.join(HEAD_TERMS)}")
        if head_term == "delayed" and cls.corrects(config):
            raise ConfigError(
                "layerpar.head_term=delayed applies the head's term with the true adjoint, which "
                "a correction would cancel (the pipelined method): set layerpar.correct=false "
                "(or layerpar.method=local), or head_term=forward"
            )

    # ------------------------------------------------------------------ state

    def end_run(self) -> None:
        super().end_run()
        self._predictions.clear()
        self._head_labels.clear()

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["predictions"] = [(p.raw, p.label_error, scale) for p, scale in self._predictions]
        state["head_labels"] = list(self._head_labels)
        state["head"] = None if self._head is None else self._head.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self._predictions.extend(
            (Prediction(raw, error), scale) for raw, error, scale in state.get("predictions", [])
        )
        self._head_labels.extend(state.get("head_labels", []))
        if state.get("head") is not None:
            self._head_for(state["head"]["shape"]).load_state_dict(state["head"])

    def _head_for(self, shape: tuple[int, ...]) -> AdjointHead:
        """The head, built at the first forward (the boundary's shape is known then)."""
        if self._head is None:
            w, config = self.worker, self.worker.config
            classes, predictor = dataset_info(config.data.dataset).num_classes, self.predictor(config)
            # Its own seed: one process or K, the head starts from the same weights.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(HEAD_SEED + 1000 * config.train.seed + w.stage)
                self._head = AdjointHead(shape, classes, config.aux.lr, w.device, w.dtype, predictor)
        return self._head

    # The three settings a subclass may fix (``methods/local.py``).

    @classmethod
    def predictor(cls, config: RunConfig) -> str:
        return config.layerpar.predictor

    @classmethod
    def fixed_scale(cls, config: RunConfig) -> float | None:
        """c when fixed; None: calibrated."""
        return config.layerpar.predictor_scale

    @classmethod
    def corrects(cls, config: RunConfig) -> bool:
        return config.layerpar.correct

    def _delays_head_term(self) -> bool:
        return self.worker.config.layerpar.head_term == "delayed"

    def _scale(self, head: AdjointHead) -> torch.Tensor | float:
        fixed = self.fixed_scale(self.worker.config)
        return head.scale() if fixed is None else fixed

    # ------------------------------------------------------------------ phases

    def forward_backward(self) -> None:
        w, s = self.worker, self.state
        if w.is_last:  # the true loss at once: nothing to predict
            super().forward_backward()
            return
        self._forward_out = self._adjoint = None
        tick = pipelined_tick(w.stage, w.stages, w.run_step)
        u = cond = y = None
        if w.is_first:
            u, cond, y = s.x, s.cond, s.y
        else:
            self._head_labels.append(s.y)
            if s.cond is not None:
                self._conds.append(s.cond)
            if tick.forward is not None:
                u = w.recv_forward(s.x.shape[0])
                cond = self._conds.popleft() if self._conds else None
                y = self._head_labels.popleft()
        if u is not None:
            assert y is not None
            self._forward_and_predict(u, cond, y)
            self._send_forward()
        if tick.backward is not None:
            # Read after the forward, which does not need it (as in the pipelined method).
            self._correct(w.recv_backward(self._pending[0].h.shape))

    def _forward_and_predict(self, u: torch.Tensor, cond: torch.Tensor | None, y: torch.Tensor) -> None:
        """Forward on stashed weights, then apply the prediction's share of the update now."""
        w, s = self.worker, self.state
        shift = self._predicted_shift() if w.config.layerpar.predict_weights else None
        h, weights = w.stashed_forward(u, shift, cond)
        head = self._head_for(tuple(h.shape[1:]))
        prediction, head_loss = head.predict_and_learn(h, y)  # unclocked: the breakdown's "other"
        raw = prediction.raw
        scale = self._scale(head)
        if not (isinstance(scale, float) and scale == 0.0) and not self._delays_head_term():
            with w.clock("backward"):
                h.backward((scale * raw).to(h.dtype), retain_graph=True)
            with w.clock("stash"):
                move_gradients(w.module, weights)
        self._pending.append(PendingForward(u=u, h=h, weights=weights, cond=cond))
        self._predictions.append((prediction, torch.as_tensor(scale, dtype=raw.dtype, device=raw.device)))
        self._forward_out = h.detach()
        s.metrics[f"head_loss/{w.stage}"] = head_loss
        s.metrics[f"predictor_scale/{w.stage}"] = torch.as_tensor(scale, dtype=torch.float64)

    def _correct(self, adjoint: torch.Tensor) -> None:
        """The true adjoint of the oldest pending micro-batch arrived: apply Jᵀ (v − m̂)."""
        w, s = self.worker, self.state
        oldest = self._pending.popleft()
        prediction, applied = self._predictions.popleft()
        assert self._head is not None
        s.metrics[f"predictor_cosine/{w.stage}"] = self._head.observe(prediction, adjoint)
        # What this backward applies besides Jᵀv: −Jᵀm̂ (a correction), +Jᵀm̂ (a delayed head
        # term) or nothing (a head term applied at the forward).
        sign = -1.0 if self.corrects(w.config) else 1.0 if self._delays_head_term() else 0.0
        residual = adjoint + sign * applied * prediction.raw
        predicted = None
        if w.run_step % UPDATE_COSINE_EVERY == 0:
            # Diagnostic (one more backward, every few steps): the update the prediction drives.
            direction = prediction.raw.to(oldest.h.dtype)
            predicted = torch.autograd.grad(
                oldest.h, oldest.weights, direction, retain_graph=True, allow_unused=True
            )
        with w.clock("backward"):
            oldest.h.backward(residual.to(oldest.h.dtype))
        if predicted is not None:
            exact = _flat(c.grad for c in oldest.weights) - sign * applied * _flat(predicted)
            s.metrics[f"prediction_update_cosine/{w.stage}"] = torch.nn.functional.cosine_similarity(
                _flat(predicted), exact, dim=0
            )
        self._finish_backward(oldest)
