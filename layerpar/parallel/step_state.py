"""What one step leaves for its later phases (common to every method)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from layerpar.auxnet import AuxOutput
from layerpar.parallel.comm import Handle


@dataclass
class AuxTargets:
    """What the AuxNet at boundary k is trained towards this step (λ⁺, μ⁺)."""

    state: torch.Tensor
    multiplier: torch.Tensor | None


@dataclass
class StepState:
    """What one step leaves for its later phases (common to every method)."""

    x: torch.Tensor
    y: torch.Tensor
    beta: float
    serial: bool = False
    final: bool = False
    """Last step of a run of parallel steps: stale methods send nothing and drop what is in
    flight (no later step of this run would read it)."""
    cond: torch.Tensor | None = None
    """Conditioning of this micro-batch for conditioned blocks (None for classifiers)."""
    aux_out: AuxOutput | None = None
    aux_targets: AuxTargets | None = None
    sends: list[Handle] = field(default_factory=list)
    metrics: dict[str, torch.Tensor | float] = field(default_factory=dict)
    """Values stay tensors until the loop reads them every ``train.log_every`` steps."""
