"""All of a module's gradients in one flat bucket, for one all-reduce instead of one per tensor."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn


def flat_grads(module: nn.Module | Iterable[nn.Parameter]) -> torch.Tensor:
    """Every parameter gradient concatenated (zeros where a parameter has none)."""
    params = module.parameters() if isinstance(module, nn.Module) else module
    grads = [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params]
    return torch.cat(grads) if grads else torch.zeros(0)


def set_flat_grads(module: nn.Module | Iterable[nn.Parameter], flat: torch.Tensor) -> None:
    """Write ``flat`` (as made by ``flat_grads``) back as the parameters' gradients."""
    params = module.parameters() if isinstance(module, nn.Module) else module
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = flat[offset : offset + n].view_as(p).clone()
        offset += n
