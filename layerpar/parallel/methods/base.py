"""The interface every training method implements, and what one step leaves for its phases.

A method is a strategy object owned by a stage worker (``parallel/stage.py``).  It declares what
it needs — an AuxNet, micro-batches, serial phases, what it sends each way — and implements the
method-specific phases of a step; the worker owns topology, optimisers, replica sync,
precision and checkpoint state, and never asks which method it runs.

A step is a fixed *program* of phases, each run on every worker before the next one starts when
all workers live in one process (the numerical reference, through ``LocalComm``), or by each
worker alone in its own process.  Both execute the same code.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch

from layerpar.auxnet import AuxOutput
from layerpar.config import OptimConfig, RunConfig
from layerpar.parallel.context import StageContext
from layerpar.parallel.stash import PendingForward
from layerpar.parallel.step_state import AuxTargets, StepState

__all__ = [
    "AUX_PHASES",
    "END_PHASES",
    "UPDATE_PHASES",
    "AuxTargets",
    "Method",
    "Phase",
    "Program",
    "StepState",
]

Owner = Literal["worker", "method", "serial_step", "aux"]


@dataclass(frozen=True)
class Phase:
    """One phase of a step program: ``owner.name()`` on every worker (in reverse stage order
    when ``reverse``).  ``owner`` is the worker itself, its parallel-step method, its serial
    step, or its AuxNet trainer."""

    owner: Owner
    name: str
    reverse: bool = False


Program = tuple[Phase, ...]

UPDATE_PHASES: Program = (Phase("worker", "start_stage_sync"), Phase("worker", "finish_stage_update"))
"""Replicas of a module all-reduce its gradients, then the optimiser steps (or accumulates)."""

AUX_PHASES: Program = (
    Phase("aux", "backward"),
    Phase("aux", "start_sync"),
    Phase("aux", "finish_update"),
)
"""The AuxNet loss at this worker's boundary, then the all-reduce and the identical Adam step."""

END_PHASES: Program = (Phase("worker", "end_step"),)


class Method(ABC):
    """A way of training the K modules of a backbone; one instance per stage worker."""

    name: ClassVar[str]
    needs_aux: ClassVar[bool] = False
    """Builds an AuxNet (forward unlocking by predicted inputs)."""
    aux_multipliers: ClassVar[bool] = False
    """The AuxNet predicts multipliers too (and is trained on μ⁺)."""
    stale: ClassVar[bool] = False
    """Messages are read a step after they are sent (wait on sends one step later)."""
    micro_batched: ClassVar[bool] = False
    """Feeds each batch in micro-batches and accumulates their gradients."""
    default_warmup_epochs: ClassVar[float] = 0.0
    default_serial_final_epochs: ClassVar[float] = 0.0
    allows_serial_every: ClassVar[bool] = True
    serial_only: ClassVar[bool] = False
    """Every step is a serial step (serial backprop)."""
    sends_forward: ClassVar[str] = "nothing"
    sends_backward: ClassVar[str] = "nothing"
    program: ClassVar[Program]
    """The phases of one parallel step."""

    def __init__(self, worker: StageContext) -> None:
        self.worker = worker

    # ------------------------------------------------------------------ declarations

    @classmethod  # noqa: B027 - an optional hook: no check by default
    def check_config(cls, config: RunConfig) -> None:
        """Raise ConfigError for settings this method cannot run (the message says the fix)."""

    @classmethod
    def auxiliary(cls) -> str:
        """The auxiliary network it trains, in words (``layerpar info``)."""
        return "an AuxNet" if cls.needs_aux else "no AuxNet"

    @classmethod
    def micro_batches(cls, config: RunConfig) -> int:
        """Micro-batches each batch is fed in (1: whole batches)."""
        return 1

    @classmethod
    def optimizer_config(cls, config: RunConfig, stage: int) -> OptimConfig:
        """The optimiser settings of module ``stage`` (a method may adapt them)."""
        return config.optim

    # ------------------------------------------------------------------ state

    @property
    def state(self) -> StepState:
        return self.worker.state

    def end_run(self) -> None:  # noqa: B027 - an optional hook: nothing in flight by default
        """A run of parallel steps ended: drop whatever is still in flight."""

    def reset(self) -> None:
        """Forget in-flight state (a checkpoint was loaded)."""
        self.end_run()

    def in_flight(self) -> int:
        """Micro-batches this worker still holds (0 after a run ends)."""
        return 0

    def pending(self) -> Sequence[PendingForward]:
        """The stashed forwards waiting for their adjoint (a stale method's; none by default)."""
        return ()

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.reset()

    def outgoing(self) -> list[tuple[str, torch.Tensor]]:
        """Messages this worker sent in its last step that a neighbour reads in its next one
        ("forward" or "backward", tensor): sent again after a resume."""
        return []

    # ------------------------------------------------------------------ the first phase

    @abstractmethod
    def forward_backward(self) -> None:
        """This worker's forward and backward of the step (gradients into its module)."""


def predicted_input(out: AuxOutput | None, stage: int) -> torch.Tensor:
    """u_k = stopgrad(a_{k−1}(x)) for the AuxNet methods: a leaf whose gradient is the module's
    input adjoint."""
    assert out is not None, "modules after the first need the AuxNet's prediction (the setup builds one)"
    return out.states[stage - 1].detach().requires_grad_(True)
