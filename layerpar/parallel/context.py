"""What a training method and an AuxNet trainer may use of their stage worker.

Methods (``methods/``) and the AuxNet trainer are written against these protocols rather than
the ``StageWorker`` class, so they depend on an interface and the worker depends on them: the
imports point one way.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any, Protocol

import torch
from torch import nn

from layerpar.auxnet import AuxOutput
from layerpar.config import RunConfig
from layerpar.parallel.clock import PhaseClock
from layerpar.parallel.comm import Comm
from layerpar.parallel.layout import Layout
from layerpar.parallel.stash import PendingForward
from layerpar.parallel.step_state import StepState


class AuxPredictor(Protocol):
    """The AuxNet side a method sees: predictions for this step, and whether it trains."""

    @property
    def trains(self) -> bool: ...

    def predict(self) -> AuxOutput: ...


class StageContext(Protocol):
    """One stage worker: its module, neighbours, messages and the current step."""

    config: RunConfig
    layout: Layout
    stage: int
    module: nn.Module
    comm: Comm
    device: torch.device
    dtype: torch.dtype
    optimizer: torch.optim.Optimizer
    accumulate: int
    run_step: int
    clock: PhaseClock

    @property
    def aux(self) -> AuxPredictor | None: ...

    @property
    def stages(self) -> int: ...

    @property
    def is_first(self) -> bool: ...

    @property
    def is_last(self) -> bool: ...

    @property
    def opens_window(self) -> bool: ...

    @property
    def state(self) -> StepState: ...

    def autocast(self) -> contextlib.AbstractContextManager[Any]: ...

    def forward(self, u: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor: ...

    def stashed_forward(
        self, u: torch.Tensor, shift: dict[str, torch.Tensor] | None = None, cond: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, list[torch.Tensor]]: ...

    def replay_forward(self, saved: dict[str, Any]) -> PendingForward: ...

    def task_loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor: ...

    def send_forward(self, h: torch.Tensor) -> None: ...

    def send_backward(self, grad: torch.Tensor) -> None: ...

    def recv_forward(self, batch: int) -> torch.Tensor: ...

    def recv_backward(self, shape: Sequence[int]) -> torch.Tensor: ...
