"""What a step is checked for: the diagnostic programs (how well the AuxNet predicts states
and adjoints, and how close a parallel step's update is to backprop's) and non-finite values.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from layerpar.parallel.methods.base import Phase, Program
from layerpar.parallel.methods.serial import SERIAL_PASS

DIAGNOSTIC_PROGRAM: Program = SERIAL_PASS + (
    Phase("worker", "keep_reference_gradient"),
    Phase("aux", "diagnose"),
    Phase("worker", "discard_step"),
)
"""A serial pass that measures how well the AuxNet predicts states and adjoints, and keeps
serial backprop's gradient for ``COSINE_PROGRAM``; no update."""

COSINE_PROGRAM: Program = (
    Phase("method", "forward_backward"),
    Phase("worker", "update_cosine"),
    Phase("worker", "discard_step"),
)
"""After ``DIAGNOSTIC_PROGRAM`` on the same batch at the same weights: the gradient one parallel
step of an AuxNet method applies, and its cosine with serial backprop's; no update."""

DIAGNOSTIC_KEYS = ("aux_state_error/", "multiplier_error/", "update_cosine/")


def nonfinite(metrics: dict[str, Any], module: nn.Module, stage: int) -> list[str]:
    """What of this step is NaN or Inf: its losses, its module's parameters (a bad gradient
    shows there after the update).  One read-back from the device."""
    losses = {k: v for k, v in metrics.items() if "loss" in k and isinstance(v, torch.Tensor)}
    norm = torch.nn.utils.get_total_norm([p.detach() for p in module.parameters()])
    values = torch.stack([*(v.detach().float().reshape(()) for v in losses.values()), norm.float()])
    finite = torch.isfinite(values)
    if bool(finite.all()):
        return []
    names = [*losses, f"parameters of module {stage}"]
    return [name for name, ok in zip(names, finite.tolist(), strict=True) if not ok]
