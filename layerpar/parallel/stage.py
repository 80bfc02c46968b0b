"""One layer-parallel worker: a module of the backbone, its optimiser, and the method that
trains it.

The worker owns what every method shares — topology (which module, which replica, its
neighbours), the optimiser and its accumulation window, the all-reduce between replicas of a
module, precision, the messages in flight, and checkpoint state.  The method
(``parallel/methods/``) owns what differs: where the module's input comes from, which loss it
backpropagates, what it keeps between steps and what it sends.  The worker never asks which
method it runs.

A step is a program of phases (``Method.program``; serial steps: ``Serial.program``).  In K
processes each worker runs the program alone; in one process the reference trainer runs each
phase on every worker before the next, through ``LocalComm``: both execute the same code, which
is what makes the in-process trainer a numerical reference for the distributed one.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from layerpar.auxnet import AuxNet
from layerpar.auxnet.ablation import ORACLE_PARTS
from layerpar.config import RunConfig
from layerpar.errors import CheckpointError
from layerpar.parallel.aux_trainer import AuxTrainer, Oracle
from layerpar.parallel.clock import PhaseClock
from layerpar.parallel.comm import Comm, Handle
from layerpar.parallel.ema import ModuleEMA
from layerpar.parallel.flat import flat_grads, set_flat_grads
from layerpar.parallel.layout import Layout
from layerpar.parallel.methods.base import AUX_PHASES, END_PHASES, Method, Phase, Program, StepState
from layerpar.parallel.methods.serial import Serial
from layerpar.parallel.objective import Objective
from layerpar.parallel.optim import make_optimizer
from layerpar.parallel.replicated import ReplicatedSync, replicated_parameters
from layerpar.parallel.stage_links import StageLinks
from layerpar.parallel.stash import PendingForward, VersionCopies, forward_on_copies, replay_forward
from layerpar.parallel.stash_meter import StashMeter
from layerpar.parallel.step_checks import DIAGNOSTIC_KEYS, nonfinite


class StageWorker(StageLinks):
    """Module ``stage`` of ``layout.stages``, replica ``replica``, talking through ``comm``."""

    def __init__(
        self,
        config: RunConfig,
        layout: Layout,
        stage: int,
        replica: int,
        module: nn.Module,
        boundary_shapes: Sequence[tuple[int, ...]],
        comm: Comm,
        total_steps: int,
        *,
        method: type[Method],
        objective: Objective,
        device: torch.device,
        dtype: torch.dtype,
        aux: AuxNet | None = None,
        oracle: Oracle | None = None,
        oracle_parts: frozenset[str] = ORACLE_PARTS["both"],
    ) -> None:
        self.config = config
        self.layout = layout
        self.stage = stage
        self.replica = replica
        self.module = module
        self.boundary_shapes = list(boundary_shapes)
        self.comm = comm
        self.objective = objective
        self.device = device
        self.dtype = dtype
        self.bf16 = config.train.precision == "bf16"
        self.wire_dtype = torch.bfloat16 if self.bf16 else dtype
        """Dtype of activations and gradients between modules (the compute dtype)."""
        self.accumulate = method.micro_batches(config)
        """Loop steps (micro-batches) per optimiser step."""
        self.optimizer, self.scheduler = make_optimizer(
            module.parameters(), method.optimizer_config(config, stage), total_steps
        )
        self.method: Method = method(self)
        self.serial = self.method if method.serial_only else Serial(self)
        uses_aux = method.needs_aux and layout.stages > 1
        self.aux = AuxTrainer(self, aux, oracle, method.aux_multipliers, oracle_parts) if uses_aux else None
        self.step = 0
        """Loop steps taken (micro-batches for a micro-batched method)."""
        self.run_step = 0
        """Steps so far in the current run of parallel steps (the pipeline's fill and drain)."""
        self._window = 0
        """Steps whose gradients have accumulated since the last optimiser step."""
        self._state: StepState | None = None
        self._inflight: list[Handle] = []
        self._stage_sync: Handle | None = None
        self._stage_bucket: torch.Tensor | None = None
        self._reference_grad: torch.Tensor | None = None
        shared = replicated_parameters(module) if layout.stages > 1 else []
        self.replicated = ReplicatedSync(shared, comm, layout.world(), layout.replicas) if shared else None
        """A denoiser's embedder: its replicas' gradients are summed over every module."""
        self._own_params = [p for p in module.parameters() if all(p is not q for q in shared)]
        decay = config.diffusion.ema_decay if config.is_diffusion else None
        self.ema = ModuleEMA(module, decay) if decay is not None else None
        self._copies = VersionCopies()
        """The stashed forwards' weight copies, one per weight version (``stash.py``)."""
        self.clock = PhaseClock()
        """Where this worker's step time goes (off unless ``layerpar bench`` turns it on)."""
        self.stash_meter = StashMeter()
        """The largest stash this worker held (off unless ``layerpar bench`` turns it on)."""

    # ---------------------------------------------------------------------------- programs

    def program(self, serial: bool) -> Program:
        """The phases of a serial or a parallel step of this run."""
        if serial:
            return self.serial.program[:-1] + (AUX_PHASES if self.aux is not None else ()) + END_PHASES
        return self.method.program

    def run_phase(self, phase: Phase) -> None:
        owners = {"worker": self, "method": self.method, "serial_step": self.serial, "aux": self.aux}
        owner = owners[phase.owner]
        if owner is not None:
            getattr(owner, phase.name)()

    # ---------------------------------------------------------------------------- a step

    def begin(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        beta: float,
        *,
        cond: torch.Tensor | None = None,
        serial: bool = False,
        final: bool = False,
    ) -> None:
        """Start a step on this worker's shard ``(x, y)`` (and its conditioning ``cond``, for a
        denoiser) with this step's β; ``final`` marks the last step of a run of parallel steps."""
        self._state = StepState(
            x=x.to(self.device, self.dtype),
            y=y.to(self.device, self.dtype if y.is_floating_point() else y.dtype),
            beta=beta,
            serial=serial,
            final=final,
            cond=None if cond is None else cond.to(self.device, self.dtype),
        )
        self.module.train()
        if self._window == 0:  # the first micro-batch of an optimiser step
            self.optimizer.zero_grad(set_to_none=True)
        if self.aux is not None:
            # Every worker contributes to the AuxNet all-reduce: clear last step's summed
            # gradients, or they would be re-added to every later step.
            self.aux.zero_grad()

    @property
    def state(self) -> StepState:
        if self._state is None:
            raise RuntimeError("phase called before begin(): run the step program in order")
        return self._state

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if not self.bf16:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def forward(self, u: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """This module on ``u`` (in the compute precision), conditioned on ``cond``: that of
        ``u``'s micro-batch (a stale method's is not this step's), by default this step's."""
        cond = cond if cond is not None else self.state.cond
        with self.clock("forward"), self.autocast():
            return self.module(u) if cond is None else self.module(u, cond)

    def stashed_forward(
        self, u: torch.Tensor, shift: dict[str, torch.Tensor] | None = None, cond: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """This module on ``u`` through copies of its weights (``stash.py``), conditioned as
        ``forward``."""
        with self.clock("stash"):
            weights = self._copies.get(self.module, shift)
            buffers = {name: b.clone() for name, b in self.module.named_buffers()}
        stashed = list(weights.values())
        with self.clock("forward"), self.autocast(), self.stash_meter.forward(stashed) as saved:
            cond = cond if cond is not None else self.state.cond
            h = forward_on_copies(self.module, weights, buffers, u, cond)
        self.stash_meter.observe(self.method.pending(), h, stashed, saved)
        return h, stashed

    def replay_forward(self, saved: dict[str, Any]) -> PendingForward:
        """A checkpointed micro-batch's forward rebuilt (``stash.replay_forward``)."""
        with self.autocast():
            return replay_forward(self.module, saved)

    def task_loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The objective on the last module's output (in the master dtype); logs loss and accuracy."""
        with self.clock("forward"):
            output = output.to(self.dtype)
            loss = self.objective.loss(output, target)
            self.state.metrics.update(self.objective.step_metrics(output, target, loss))
        return loss

    # ---------------------------------------------------------------------------- updates

    def start_stage_sync(self) -> None:
        if not self._applies_update():
            return
        if self.replicated is not None:
            self.replicated.start()  # every rank, at the same optimiser steps
        if self.layout.replicas == 1 or not self._has_gradient():
            return  # every replica of this module agrees on both: they run the same schedule
        self._stage_bucket = flat_grads(self._own_params)
        self._stage_sync = self.comm.all_reduce(self._stage_bucket, self.layout.stage_group(self.stage))

    def finish_stage_update(self) -> None:
        if self.replicated is not None:
            with self.clock("wait: all-reduce"):
                self.replicated.finish()
        if self._stage_sync is not None:
            assert self._stage_bucket is not None
            with self.clock("wait: all-reduce"):
                self._stage_sync.wait()
            set_flat_grads(self._own_params, self._stage_bucket / self.layout.replicas)
            self._stage_sync = self._stage_bucket = None
        if self._applies_update():
            if self.accumulate > 1 and not self.state.serial:
                for param in self.module.parameters():
                    if param.grad is not None:
                        param.grad.div_(self.accumulate)
            # Where no gradient has arrived yet (a stale method's fill) the grads are None, and
            # the optimiser leaves those parameters alone.
            with self.clock("optimizer"):
                self.optimizer.step()
                if self.ema is not None:
                    self.ema.update()
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
        return (self.step + 1) % self.accumulate == 0 or s.final

    @property
    def opens_window(self) -> bool:
        """Whether this step is the first micro-batch of an optimiser step's window."""
        return self._window == 0

    def _has_gradient(self) -> bool:
        return any(p.grad is not None for p in self._own_params)

    def end_step(self) -> None:
        """Wait for the sends that must complete, and advance the step counters."""
        s = self.state
        # A stale method's messages are read at the start of the neighbour's next step: wait
        # for them one step later, or this module would idle until then (gloo's send completes
        # on receipt).
        with self.clock("wait: send"):
            for handle in self._inflight:
                handle.wait()
            self._inflight = []
            if self.method.stale and not (s.serial or s.final):
                self._inflight = s.sends
            else:
                for handle in s.sends:
                    handle.wait()
        self.run_step = 0 if (s.serial or s.final) else self.run_step + 1
        if s.final:
            self.method.end_run()
        self.step += 1

    def discard_step(self) -> None:
        """End a diagnostic pass: forget its gradients, do not count it."""
        self.optimizer.zero_grad(set_to_none=True)
        if self.aux is not None:
            self.aux.zero_grad()
        for handle in self.state.sends:
            handle.wait()
        s = self.state
        for key in [k for k in s.metrics if not k.startswith(DIAGNOSTIC_KEYS)]:
            del s.metrics[key]

    def keep_reference_gradient(self) -> None:
        """Serial backprop's gradient of this module, kept for ``update_cosine``."""
        self._reference_grad = flat_grads(self.module).detach().clone()

    def update_cosine(self) -> None:
        """cos(gradient of this parallel step, serial backprop's gradient of the same batch at
        the same weights): where the update goes, against where backprop would take it."""
        reference, self._reference_grad = self._reference_grad, None
        if reference is None:
            return
        self.state.metrics[f"update_cosine/{self.stage}"] = torch.nn.functional.cosine_similarity(
            flat_grads(self.module), reference, dim=0
        )

    def nonfinite(self) -> list[str]:
        """What of this step is NaN or Inf (``step_checks.nonfinite``)."""
        return nonfinite(self.state.metrics, self.module, self.stage)

    def take_metrics(self) -> dict[str, torch.Tensor | float]:
        metrics = self.state.metrics
        self._state = None
        return metrics

    # ---------------------------------------------------------------------------- tests

    def stage_gradients(self) -> list[torch.Tensor]:
        """Gradients of this module's parameters (after a backward phase)."""
        return [
            p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p)
            for p in self.module.parameters()
        ]

    # ---------------------------------------------------------------------------- state

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume this worker exactly."""
        return {
            "stage": self.stage,
            "replica": self.replica,
            "method": self.method.name,
            "step": self.step,
            "module": self.module.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "run_step": self.run_step,
            "window": self._window,
            # Inside an accumulation window the gradients summed so far are state too.
            "grads": [p.grad for p in self.module.parameters()] if self._window else None,
            "method_state": self.method.state_dict(),
            **(self.aux.state_dict() if self.aux is not None else {"aux": None, "aux_optimizer": None}),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "rng": torch.get_rng_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if (state["stage"], state["replica"]) != (self.stage, self.replica):
            raise CheckpointError(
                f"checkpoint shard is for stage {state['stage']} replica {state['replica']}, "
                f"this worker is stage {self.stage} replica {self.replica}: resume with the same layout"
            )
        self.step = state["step"]
        self.run_step = state.get("run_step", 0)
        self._window = state.get("window", 0)
        self.module.load_state_dict(state["module"])
        for param, grad in zip(self.module.parameters(), state.get("grads") or [], strict=False):
            param.grad = None if grad is None else grad.to(param.device)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.method.load_state_dict(state.get("method_state", {}))
        if self.aux is not None:
            self.aux.load_state_dict(state)
        if self.ema is not None and state.get("ema") is not None:
            self.ema.load_state_dict(state["ema"])
        torch.set_rng_state(state["rng"])
