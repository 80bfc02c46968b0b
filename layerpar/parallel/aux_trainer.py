"""A worker's AuxNet replica: its predictions, its loss at this worker's boundary, and the
all-reduce that keeps every replica identical (DESIGN.md §2, step 8).

Every worker holds a full replica.  Each step every worker contributes to one all-reduce of
the AuxNet's gradients — including those with no boundary loss this step (the last module) —
so the replicas take the same Adam step.  With an *oracle* (true activations and adjoints, a
test instrument) nothing is trained and nothing is sent.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from layerpar.auxnet import AuxNet, AuxOutput, aux_loss
from layerpar.parallel.comm import Handle
from layerpar.parallel.context import StageContext
from layerpar.parallel.flat import flat_grads, set_flat_grads
from layerpar.parallel.local_loss import constraint_residual
from layerpar.parallel.optim import make_aux_optimizer

Oracle = Callable[[torch.Tensor, torch.Tensor, int, torch.Tensor | None], AuxOutput]
"""(x, y, upto, cond) -> the true states and adjoints (cond: a denoiser's conditioning)."""


class AuxTrainer:
    """The AuxNet replica (or oracle) of one stage worker."""

    def __init__(
        self, worker: StageContext, aux: AuxNet | None, oracle: Oracle | None, multipliers: bool
    ) -> None:
        if aux is None and oracle is None:
            raise ValueError("an AuxTrainer needs an AuxNet or an oracle")
        self.worker = worker
        self.net = aux
        self.oracle = oracle
        self.multipliers = multipliers
        """Train the multiplier heads on μ⁺ (the AL method)."""
        self.optimizer = (
            make_aux_optimizer(aux, worker.config.aux) if aux is not None and oracle is None else None
        )
        self._sync: Handle | None = None
        self._bucket: torch.Tensor | None = None

    @property
    def trains(self) -> bool:
        return self.optimizer is not None

    def zero_grad(self) -> None:
        if self.optimizer is not None:
            self.optimizer.zero_grad(set_to_none=True)

    def predict(self) -> AuxOutput:
        """Predictions up to the boundary after this worker's module, for this step's batch."""
        w = self.worker
        s = w.state
        upto = min(w.stage, w.stages - 2)
        if self.oracle is not None:
            return self.oracle(s.x, s.y, upto, s.cond)
        assert self.net is not None
        self.net.train()
        labels = s.y if w.config.aux.label_conditioned_multipliers else None
        with w.autocast():
            return self.net(s.x, s.cond, upto=upto, labels=labels)

    # ------------------------------------------------------------------ phases

    def backward(self) -> None:
        w, s = self.worker, self.worker.state
        if not self.trains or s.aux_out is None or w.is_last or s.aux_targets is None:
            return
        targets, dtype = s.aux_targets, w.dtype  # the loss in the master dtype (bf16 runs too)
        multiplier = s.aux_out.multipliers[w.stage] if self.multipliers else None
        loss = aux_loss(
            s.aux_out.states[w.stage].to(dtype),
            multiplier.to(dtype) if multiplier is not None else None,
            targets.state.to(dtype),
            targets.multiplier.to(dtype) if targets.multiplier is not None else None,
            w.config.layerpar.gamma,
        )
        loss.backward()
        s.metrics[f"aux_loss/{w.stage}"] = loss.detach()

    def start_sync(self) -> None:
        if not self.trains:
            return
        assert self.net is not None
        self._bucket = flat_grads(self.net)
        self._sync = self.worker.comm.all_reduce(self._bucket, self.worker.layout.world())

    def finish_update(self) -> None:
        if self._sync is None:
            return
        assert self.net is not None and self.optimizer is not None and self._bucket is not None
        self._sync.wait()
        # Sum over modules (each owns one boundary's loss), mean over data-parallel replicas.
        set_flat_grads(self.net, self._bucket / self.worker.layout.replicas)
        self.optimizer.step()
        self._sync = self._bucket = None

    def diagnose(self) -> None:
        """After a serial pass: AuxNet state error ||a_k − h_k||/||h_k|| and multiplier error
        ||m_k − v_k||/||v_k|| against the true activation and adjoint."""
        w, s = self.worker, self.worker.state
        if s.aux_out is None or s.aux_targets is None or w.is_last:
            return
        s.metrics[f"aux_state_error/{w.stage}"] = constraint_residual(
            s.aux_targets.state, s.aux_out.states[w.stage].detach()
        )
        multiplier = s.aux_out.multipliers[w.stage]
        if multiplier is not None and s.aux_targets.multiplier is not None:
            s.metrics[f"multiplier_error/{w.stage}"] = constraint_residual(
                s.aux_targets.multiplier, multiplier.detach()
            )

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, object]:
        return {
            "aux": self.net.state_dict() if self.net is not None else None,
            "aux_optimizer": self.optimizer.state_dict() if self.optimizer is not None else None,
        }

    def load_state_dict(self, state: dict[str, object]) -> None:
        if self.net is not None and state.get("aux") is not None:
            self.net.load_state_dict(state["aux"])  # type: ignore[arg-type]
        if self.optimizer is not None and state.get("aux_optimizer") is not None:
            self.optimizer.load_state_dict(state["aux_optimizer"])  # type: ignore[arg-type]
