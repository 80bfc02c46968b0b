"""One layer-parallel worker: a module of the backbone, its optimiser and an AuxNet replica.

A training step is a fixed program of *phases* (methods without arguments).  In K processes each
worker runs the program alone; in one process the reference trainer runs each phase on every
worker before moving to the next, through ``LocalComm``.  Both therefore execute exactly the same
code, which is what makes the in-process trainer a numerical reference for the distributed one.

Layer-parallel step (DESIGN.md §2), on every worker at once:
    local_forward_backward   u = stopgrad(a_{k-1}(x)); h = F_k(u); L_k; backward; v_k = B·∂L_k/∂u
    start_stage_sync         replicas of this module all-reduce its gradients (async)
    finish_stage_update      optimiser step of θ_k — no wait for any other module
    post_adjoint             send v_k to module k−1 (non-blocking)
    receive_adjoint          v_{k+1} from module k+1
    aux_backward             λ⁺, μ⁺; AuxNet loss at boundary k; backward through its prefix
    start_aux_sync / finish_aux_update    all-reduce AuxNet gradients; identical Adam step

With ``layerpar.method: delayed`` the same phases run the stale-adjoint variant of
``delayed.py``: ``local_forward_backward`` receives v_{k+1} of an earlier batch and updates
with it, ``receive_adjoint`` has nothing to do, and the AuxNet is distilled on the true h_k.
With ``layerpar.method: pipelined`` (``pipelined.py``) ``local_forward_backward`` also takes its
input from module k−1's previous step instead of the AuxNet, and ``post_adjoint`` sends h_k on.

Serial step (warm-up and hybrid phases: ordinary backprop across the modules, the AuxNet is
distilled on the true activations and adjoints meanwhile):
    serial_forward (stage order) → serial_backward (reverse order) → same updates as above.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from layerpar.auxnet import AuxNet, AuxOutput, aux_loss
from layerpar.config import RunConfig
from layerpar.parallel.comm import Comm, Handle
from layerpar.parallel.delayed import PendingForward, delayed_forward_backward
from layerpar.parallel.layout import Layout
from layerpar.parallel.local_loss import (
    al_targets,
    beta_at,
    constraint_residual,
    local_loss,
)
from layerpar.parallel.optim import make_aux_optimizer, make_optimizer
from layerpar.parallel.pipelined import compensated_momentum, pipeline_delay, pipelined_forward_backward

PARALLEL_PROGRAM: tuple[tuple[str, bool], ...] = (
    ("local_forward_backward", False),
    ("start_stage_sync", False),
    ("finish_stage_update", False),
    ("post_adjoint", False),
    ("receive_adjoint", False),
    ("aux_backward", False),
    ("start_aux_sync", False),
    ("finish_aux_update", False),
)
"""Phases of a layer-parallel step as (method, run in reverse stage order)."""

SERIAL_PROGRAM: tuple[tuple[str, bool], ...] = (
    ("serial_forward", False),
    ("serial_backward", True),
    ("start_stage_sync", False),
    ("finish_stage_update", False),
    ("aux_backward", False),
    ("start_aux_sync", False),
    ("finish_aux_update", False),
)

DIAGNOSTIC_PROGRAM: tuple[tuple[str, bool], ...] = (
    ("serial_forward", False),
    ("serial_backward", True),
    ("diagnose", False),
)
"""A serial pass that measures how well the AuxNet predicts states and adjoints; no update."""

Oracle = Callable[[torch.Tensor, torch.Tensor, int], AuxOutput]


@dataclass
class _StepState:
    """What one step leaves for its later phases."""

    x: torch.Tensor
    y: torch.Tensor
    beta: float
    final_parallel: bool = False
    """Last of a run of parallel steps: the stale methods send nothing (no step will read it)."""
    serial: bool = False
    aux_out: AuxOutput | None = None
    u: torch.Tensor | None = None
    h: torch.Tensor | None = None
    adjoint_out: torch.Tensor | None = None
    forward_out: torch.Tensor | None = None
    """h_k for module k+1's next step (pipelined method)."""
    state_target: torch.Tensor | None = None
    multiplier_target: torch.Tensor | None = None
    sends: list[Handle] = field(default_factory=list)
    stage_sync: Handle | None = None
    aux_sync: Handle | None = None
    aux_bucket: torch.Tensor | None = None
    stage_bucket: torch.Tensor | None = None
    metrics: dict[str, float] = field(default_factory=dict)


class StageWorker:
    """Module ``stage`` of ``layout.stages``, replica ``replica``, talking through ``comm``."""

    def __init__(
        self,
        config: RunConfig,
        layout: Layout,
        stage: int,
        replica: int,
        module: nn.Module,
        aux: AuxNet | None,
        boundary_shapes: list[tuple[int, ...]],
        comm: Comm,
        total_steps: int,
        *,
        device: torch.device,
        dtype: torch.dtype,
        oracle: Oracle | None = None,
    ) -> None:
        self.config = config
        self.layout = layout
        self.stage = stage
        self.replica = replica
        self.module = module
        self.aux = aux
        self.boundary_shapes = boundary_shapes
        self.comm = comm
        self.total_steps = total_steps
        self.device = device
        self.dtype = dtype
        self.oracle = oracle
        optim = config.optim
        if self.pipelined and config.layerpar.compensate_momentum:
            steps_late = self.delay / self.accumulate  # in optimiser steps
            optim = dataclasses.replace(optim, momentum=compensated_momentum(optim.momentum, steps_late))
        self.optimizer, self.scheduler = make_optimizer(module.parameters(), optim, total_steps)
        self.aux_optimizer = make_aux_optimizer(aux, config.aux) if aux is not None else None
        self.step = 0
        self._state: _StepState | None = None
        self._pending: deque[PendingForward] = deque()
        self._inflight: list[Handle] = []
        self._labels: deque[torch.Tensor] = deque()
        """Labels of the batches still on their way to the last module (pipelined)."""
        self._run_step = 0
        """Parallel steps so far in the current run of them (pipelined: the fill)."""
        self._window = 0
        """Steps whose gradients have accumulated since the last optimiser step (pipelined)."""

    # ---------------------------------------------------------------------------- topology

    @property
    def is_first(self) -> bool:
        return self.stage == 0

    @property
    def is_last(self) -> bool:
        return self.stage == self.layout.stages - 1

    @property
    def prev_rank(self) -> int:
        return self.layout.rank(self.stage - 1, self.replica)

    @property
    def next_rank(self) -> int:
        return self.layout.rank(self.stage + 1, self.replica)

    @property
    def delayed(self) -> bool:
        return self.config.layerpar.method == "delayed"

    @property
    def pipelined(self) -> bool:
        return self.config.layerpar.method == "pipelined"

    @property
    def accumulate(self) -> int:
        """Micro-batch steps per optimiser step (pipelined method; 1 otherwise)."""
        return self.config.micro_batches

    @property
    def stale(self) -> bool:
        """Updates arrive steps after their forward; messages are read a step after sending."""
        return self.delayed or self.pipelined

    @property
    def delay(self) -> int:
        """Steps between this module's forward of a batch and its update with it."""
        if self.pipelined:
            return pipeline_delay(self.stage, self.layout.stages)
        return self.layout.stages - 1 - self.stage if self.delayed else 0

    @property
    def trains_aux(self) -> bool:
        return self.aux is not None and self.oracle is None

    def _shape(self, boundary: int, batch: int) -> tuple[int, ...]:
        return (batch, *self.boundary_shapes[boundary])

    # ---------------------------------------------------------------------------- step set-up

    def begin(self, x: torch.Tensor, y: torch.Tensor, beta: float, final_parallel: bool = False) -> None:
        """Start a step on this worker's shard ``(x, y)``; ``beta`` is this step's β;
        ``final_parallel`` marks the last step of a run of parallel steps."""
        self._state = _StepState(
            x=x.to(self.device, self.dtype), y=y.to(self.device), beta=beta, final_parallel=final_parallel
        )
        self.module.train()
        # Every worker contributes to the AuxNet all-reduce, including those with no boundary
        # loss this step (the last module, serial steps): clear last step's summed gradients,
        # or they would be re-added to every later step.
        if self.aux_optimizer is not None:
            self.aux_optimizer.zero_grad(set_to_none=True)

    @property
    def state(self) -> _StepState:
        if self._state is None:
            raise RuntimeError("phase called before begin(): run the step program in order")
        return self._state

    def _aux_forward(self) -> AuxOutput | None:
        """This worker's AuxNet predictions, up to the boundary after its module."""
        if self.layout.stages == 1:
            return None
        upto = min(self.stage, self.layout.stages - 2)
        s = self.state
        if self.oracle is not None:
            return self.oracle(s.x, s.y, upto)
        assert self.aux is not None
        self.aux.train()
        labels = s.y if self.config.aux.label_conditioned_multipliers else None
        return self.aux(s.x, upto=upto, labels=labels)

    def _multiplier(self, out: AuxOutput) -> torch.Tensor | None:
        if self.config.layerpar.method != "al":
            return None
        m = out.multipliers[self.stage]
        return m.detach() if m is not None else None

    # ---------------------------------------------------------------------------- parallel step

    def local_forward_backward(self) -> None:
        if self.pipelined:
            pipelined_forward_backward(self)
            return
        if self.delayed and not self.is_last:
            delayed_forward_backward(self)
            return
        s = self.state
        s.aux_out = self._aux_forward()
        if self.is_first:
            s.u = s.x
        else:
            assert s.aux_out is not None
            s.u = s.aux_out.states[self.stage - 1].detach().requires_grad_(True)
        s.h = self.module(s.u)
        self.optimizer.zero_grad(set_to_none=True)
        if self.is_last:
            loss = self._task_loss(s.h, s.y)
        else:
            assert s.aux_out is not None
            state = s.aux_out.states[self.stage].detach()
            multiplier = self._multiplier(s.aux_out)
            loss = local_loss(s.h, state, multiplier, s.beta)
            s.metrics[f"residual/{self.stage}"] = constraint_residual(s.h.detach(), state)
        loss.backward()
        s.metrics[f"local_loss/{self.stage}"] = float(loss.detach())
        if not self.is_first:
            assert s.u.grad is not None
            s.adjoint_out = s.u.grad * s.u.shape[0]

    def post_adjoint(self) -> None:
        s = self.state
        if self.stale and s.final_parallel:
            return  # no later step of this run would read it
        if s.forward_out is not None:
            s.sends.append(self.comm.isend(s.forward_out, self.next_rank))
        if self.is_first or (self.stale and s.adjoint_out is None):
            return  # nothing due yet
        assert s.adjoint_out is not None
        s.sends.append(self.comm.isend(s.adjoint_out, self.prev_rank))

    def receive_adjoint(self) -> None:
        s = self.state
        if self.is_last or self.stale:
            return
        assert s.h is not None
        adjoint_next = self.comm.recv(s.h.shape, self.next_rank, self.dtype, self.device)
        multiplier = self._multiplier(s.aux_out) if s.aux_out is not None else None
        s.state_target, s.multiplier_target = al_targets(
            s.h.detach(), multiplier, adjoint_next, s.beta, self.config.layerpar.al_step_clip
        )

    # ---------------------------------------------------------------------------- serial step

    def serial_forward(self) -> None:
        s = self.state
        s.serial = True
        if self.trains_aux and not self.is_last:
            s.aux_out = self._aux_forward()
        if self.is_first:
            s.u = s.x
        else:
            shape = self._shape(self.stage - 1, s.x.shape[0])
            s.u = self.comm.recv(shape, self.prev_rank, self.dtype, self.device).requires_grad_(True)
        s.h = self.module(s.u)
        self.optimizer.zero_grad(set_to_none=True)
        if self.is_last:
            loss = self._task_loss(s.h, s.y)
            loss.backward()
            s.metrics[f"local_loss/{self.stage}"] = float(loss.detach())
            self._send_input_grad()
        else:
            s.sends.append(self.comm.isend(s.h.detach(), self.next_rank))

    def serial_backward(self) -> None:
        s = self.state
        if self.is_last:
            return
        assert s.h is not None
        grad = self.comm.recv(s.h.shape, self.next_rank, self.dtype, self.device)
        s.h.backward(grad)
        self._send_input_grad()
        # Distillation targets: the true state and the true per-sample adjoint.
        s.state_target = s.h.detach()
        s.multiplier_target = grad * s.h.shape[0]
        if s.aux_out is not None:
            s.metrics[f"residual/{self.stage}"] = constraint_residual(
                s.state_target, s.aux_out.states[self.stage].detach()
            )

    def _send_input_grad(self) -> None:
        s = self.state
        if not self.is_first:
            assert s.u is not None and s.u.grad is not None
            s.sends.append(self.comm.isend(s.u.grad, self.prev_rank))

    def diagnose(self) -> None:
        """After a serial pass: AuxNet state error ||a_k − h_k||/||h_k|| and multiplier error
        ||m_k − v_k||/||v_k|| against the true activation and adjoint; then discard the pass."""
        s = self.state
        if s.aux_out is not None and s.state_target is not None and not self.is_last:
            s.metrics[f"aux_state_error/{self.stage}"] = constraint_residual(
                s.state_target, s.aux_out.states[self.stage].detach())
            multiplier = s.aux_out.multipliers[self.stage]
            if multiplier is not None and s.multiplier_target is not None:
                s.metrics[f"multiplier_error/{self.stage}"] = constraint_residual(
                    s.multiplier_target, multiplier.detach())
        s.metrics.pop(f"residual/{self.stage}", None)
        s.metrics.pop(f"local_loss/{self.stage}", None)
        for key in ("loss", "acc"):
            s.metrics.pop(key, None)
        self.optimizer.zero_grad(set_to_none=True)
        if self.aux_optimizer is not None:
            self.aux_optimizer.zero_grad(set_to_none=True)
        for handle in s.sends:
            handle.wait()

    # ---------------------------------------------------------------------------- updates

    def start_stage_sync(self) -> None:
        s = self.state
        if self.layout.replicas == 1 or not self._applies_update() or not self._has_gradient():
            return  # every replica of this module agrees on both: they run the same schedule
        s.stage_bucket = _flat_grads(self.module)
        s.stage_sync = self.comm.all_reduce(s.stage_bucket, self.layout.stage_group(self.stage))

    def finish_stage_update(self) -> None:
        s = self.state
        if s.stage_sync is not None:
            assert s.stage_bucket is not None
            s.stage_sync.wait()
            _set_flat_grads(self.module, s.stage_bucket / self.layout.replicas)
        if self._applies_update():
            if self.accumulate > 1 and not s.serial:
                for param in self.module.parameters():
                    if param.grad is not None:
                        param.grad.div_(self.accumulate)
            # Where no gradient has arrived yet (a stale method's fill) the grads are None, and
            # the optimiser leaves those parameters alone.
            self.optimizer.step()
            self._window = 0
        else:
            self._window += 1
        with warnings.catch_warnings():
            # Inside an accumulation window (or a stale method's fill) the schedule advances with
            # no optimiser step; LambdaLR computes each step's rate from the count, so nothing is
            # skipped, whatever torch's order check says.
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)`")
            self.scheduler.step()

    def _applies_update(self) -> bool:
        """Whether this step ends an accumulation window (always, without accumulation)."""
        s = self.state
        if self.accumulate == 1 or s.serial:
            return True
        # Windows follow the global batches (steps k·M .. k·M+M−1); a run of parallel steps cut
        # by an evaluation ends its window early.
        return (self.step + 1) % self.accumulate == 0 or s.final_parallel

    def _has_gradient(self) -> bool:
        return any(p.grad is not None for p in self.module.parameters())

    def aux_backward(self) -> None:
        s = self.state
        if not self.trains_aux or s.aux_out is None or self.is_last or s.state_target is None:
            return
        multiplier = s.aux_out.multipliers[self.stage]
        use_multiplier = self.config.layerpar.method == "al"
        loss = aux_loss(
            s.aux_out.states[self.stage],
            multiplier if use_multiplier else None,
            s.state_target,
            s.multiplier_target,
            self.config.layerpar.gamma,
        )
        loss.backward()
        s.metrics[f"aux_loss/{self.stage}"] = float(loss.detach())

    def start_aux_sync(self) -> None:
        s = self.state
        if not self.trains_aux or (self.pipelined and not s.serial):
            return  # the pipelined parallel steps leave the AuxNet alone, on every worker
        assert self.aux is not None
        s.aux_bucket = _flat_grads(self.aux)
        s.aux_sync = self.comm.all_reduce(s.aux_bucket, self.layout.world())

    def finish_aux_update(self) -> None:
        s = self.state
        if s.aux_sync is not None:
            assert self.aux is not None and self.aux_optimizer is not None and s.aux_bucket is not None
            s.aux_sync.wait()
            # Sum over modules (each owns one boundary's loss), mean over data-parallel replicas.
            _set_flat_grads(self.aux, s.aux_bucket / self.layout.replicas)
            self.aux_optimizer.step()
        # Stale messages are read at the start of the neighbour's next step: wait for them one
        # step later, or this module would idle until then (gloo's send completes on receipt).
        for handle in self._inflight:
            handle.wait()
        self._inflight = []
        if self.stale and not (s.serial or s.final_parallel):
            self._inflight = s.sends
        else:
            for handle in s.sends:
                handle.wait()
        self._run_step = 0 if (s.serial or s.final_parallel) else self._run_step + 1
        if s.final_parallel:
            self._pending.clear()
            self._labels.clear()
        self.step += 1

    # ---------------------------------------------------------------------------- helpers

    def _task_loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss = F.cross_entropy(logits, y)
        s = self.state
        s.metrics["loss"] = float(loss.detach())
        s.metrics["acc"] = float((logits.detach().argmax(1) == y).float().mean())
        return loss

    def take_metrics(self) -> dict[str, float]:
        metrics = self.state.metrics
        self._state = None
        return metrics

    def stage_gradients(self) -> list[torch.Tensor]:
        """Gradients of this module's parameters (after a backward phase; for tests)."""
        return [
            p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p)
            for p in self.module.parameters()
        ]

    def beta_for(self, parallel_progress: float) -> float:
        lp = self.config.layerpar
        return beta_at(lp.beta, lp.beta_final, parallel_progress)

    # ---------------------------------------------------------------------------- state

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume this worker exactly."""
        return {
            "stage": self.stage,
            "replica": self.replica,
            "step": self.step,
            "module": self.module.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "aux": self.aux.state_dict() if self.aux is not None else None,
            "aux_optimizer": self.aux_optimizer.state_dict() if self.aux_optimizer is not None else None,
            "rng": torch.get_rng_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        from layerpar.errors import CheckpointError

        if (state["stage"], state["replica"]) != (self.stage, self.replica):
            raise CheckpointError(
                f"checkpoint shard is for stage {state['stage']} replica {state['replica']}, "
                f"this worker is stage {self.stage} replica {self.replica}: resume with the same layout"
            )
        self.step = state["step"]
        self._pending.clear()
        self._labels.clear()
        self._run_step = 0
        self._window = 0
        self.module.load_state_dict(state["module"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.aux is not None and state["aux"] is not None:
            self.aux.load_state_dict(state["aux"])
        if self.aux_optimizer is not None and state["aux_optimizer"] is not None:
            self.aux_optimizer.load_state_dict(state["aux_optimizer"])
        torch.set_rng_state(state["rng"])


def _flat_grads(module: nn.Module) -> torch.Tensor:
    """All parameter gradients in one flat bucket (zeros where a parameter has none)."""
    grads = [
        (p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in module.parameters()
    ]
    return torch.cat(grads) if grads else torch.zeros(0)


def _set_flat_grads(module: nn.Module, flat: torch.Tensor) -> None:
    offset = 0
    for p in module.parameters():
        n = p.numel()
        p.grad = flat[offset : offset + n].view_as(p).clone()
        offset += n
