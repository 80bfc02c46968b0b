"""An exponential moving average of one module's weights (diffusion models are sampled from it).

Each worker keeps the EMA of its own module, updated after each of its optimiser steps; the
assembled EMA model is the EMA modules concatenated, exactly the EMA of the serial model, since
the update is per parameter.  The decay warms up as min(decay, (1 + n)/(10 + n)) over optimiser
steps n (the diffusers ``EMAModel`` rule), so a short run's EMA is not dominated by its
initial weights.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def warmed_decay(decay: float, updates: int) -> float:
    return min(decay, (1 + updates) / (10 + updates))


class ModuleEMA:
    """EMA copies of ``module``'s parameters (buffers are copied as they are)."""

    def __init__(self, module: nn.Module, decay: float) -> None:
        self.module = module
        self.decay = decay
        self.updates = 0
        self.shadow = {name: p.detach().clone() for name, p in module.named_parameters()}

    @torch.no_grad()
    def update(self) -> None:
        d = warmed_decay(self.decay, self.updates)
        # shadow ← d·shadow + (1 − d)·θ as one fused call over every tensor (a Python loop of
        # two ops per parameter cost 3× as long on the DiT)
        names = list(self.shadow)
        live = dict(self.module.named_parameters())
        torch._foreach_lerp_([self.shadow[n] for n in names], [live[n].detach() for n in names], 1 - d)
        self.updates += 1

    def state(self) -> dict[str, torch.Tensor]:
        """The module's state_dict with the EMA weights in place of the live ones."""
        live = self.module.state_dict()
        return {key: self.shadow.get(key, value).detach().clone() for key, value in live.items()}

    def state_dict(self) -> dict[str, Any]:
        return {"updates": self.updates, "shadow": self.shadow}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.updates = state["updates"]
        for name, value in state["shadow"].items():
            self.shadow[name].copy_(value)
