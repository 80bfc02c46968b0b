"""A worker's AuxNet replica: its predictions, its loss at this worker's boundary, and the
all-reduce that keeps every replica identical (DESIGN.md §2, step 8).

Every worker holds a full replica.  Each step every worker contributes to one all-reduce of
the AuxNet's gradients — including those with no boundary loss this step (the last module) —
so the replicas take the same Adam step.  With an *oracle* (true activations and adjoints, a
test instrument) nothing is trained and nothing is sent.  With an oracle for *part* of the
prediction (``layerpar.oracle``, an ablation: ``auxnet/ablation.py``) the modules receive the
truth for that part while the AuxNet trains on its own prediction as usual.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from layerpar.auxnet import AuxNet, AuxOutput, aux_loss
from layerpar.auxnet.ablation import ORACLE_PARTS, substitute
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
        self,
        worker: StageContext,
        aux: AuxNet | None,
        oracle: Oracle | None,
        multipliers: bool,
        oracle_parts: frozenset[str] = ORACLE_PARTS["both"],
    ) -> None:
        self.worker = worker
        self.net = aux
        self.oracle = oracle
        self.oracle_parts = oracle_parts if oracle is not None else frozenset()
        """What the oracle replaces: everything (a test instrument) or one part (an ablation)."""
        self.only_oracle = self.oracle_parts == ORACLE_PARTS["both"]
        if aux is None and not self.only_oracle:
            raise ValueError("an AuxTrainer needs an AuxNet or an oracle for its whole prediction")
        self.multipliers = multipliers
        """Train the multiplier heads on μ⁺ (the AL method)."""
        self.optimizer = (
            make_aux_optimizer(aux, worker.config.aux) if aux is not None and not self.only_oracle else None
        )
        self._own: AuxOutput | None = None
        """The AuxNet's own prediction of this step (what it trains on and is scored on)."""
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
        if self.only_oracle:
            assert self.oracle is not None
            return self.oracle(s.x, s.y, upto, s.cond)
        assert self.net is not None
        self.net.train()
        labels = s.y if w.config.aux.label_conditioned_multipliers else None
        with w.autocast():
            self._own = self.net(s.x, s.cond, upto=upto, labels=labels)
        if self.oracle is None:
            return self._own
        return substitute(self._own, self.oracle(s.x, s.y, upto, s.cond), self.oracle_parts)

    def _prediction(self) -> AuxOutput | None:
        """The AuxNet's own prediction of this step (the oracle's, when it replaces it all)."""
        return self.worker.state.aux_out if self.only_oracle else self._own

    # ------------------------------------------------------------------ phases

    def backward(self) -> None:
        w, s = self.worker, self.worker.state
        own = self._prediction()
        if not self.trains or s.aux_out is None or own is None or w.is_last or s.aux_targets is None:
            return
        targets, dtype = s.aux_targets, w.dtype  # the loss in the master dtype (bf16 runs too)
        multiplier = own.multipliers[w.stage] if self.multipliers else None
        loss = aux_loss(
            own.states[w.stage].to(dtype),
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
        own = self._prediction()
        if s.aux_out is None or own is None or s.aux_targets is None or w.is_last:
            return
        s.metrics[f"aux_state_error/{w.stage}"] = constraint_residual(
            s.aux_targets.state, own.states[w.stage].detach()
        )
        multiplier = own.multipliers[w.stage]
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
