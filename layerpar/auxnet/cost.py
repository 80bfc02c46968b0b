"""What the AuxNet costs, as a fraction of one serial forward+backward of the main network."""

from __future__ import annotations

import time

import torch
from torch import nn


def _forward_backward_seconds(
    module: nn.Module, x: torch.Tensor, repeats: int, cond: torch.Tensor | None = None
) -> float:
    timings = []
    for attempt in range(repeats + 1):
        start = time.perf_counter()
        out = module(x) if cond is None else module(x, cond)
        tensors = (
            [out]
            if isinstance(out, torch.Tensor)
            else list(out.states) + [m for m in out.multipliers if m is not None]
        )
        torch.autograd.backward(tensors, [torch.ones_like(t) for t in tensors])
        if x.is_cuda:
            torch.cuda.synchronize(x.device)
        if attempt:
            timings.append(time.perf_counter() - start)
        module.zero_grad(set_to_none=True)
    return sorted(timings)[len(timings) // 2]


def aux_cost_fraction(
    aux: nn.Module, model: nn.Module, sample: torch.Tensor, repeats: int = 3, cond: torch.Tensor | None = None
) -> float:
    """Median (AuxNet forward+backward) / (main network forward+backward) on ``sample`` (and
    its conditioning ``cond``, for a denoiser).

    Buffers (BatchNorm statistics) of both networks are restored afterwards.
    """
    saved = [{k: v.clone() for k, v in m.state_dict().items()} for m in (aux, model)]
    aux_s = _forward_backward_seconds(aux, sample, repeats, cond)
    main_s = _forward_backward_seconds(model, sample, repeats, cond)
    for module, state in zip((aux, model), saved):
        module.load_state_dict(state)
    return aux_s / main_s


def parameter_fraction(aux: nn.Module, model: nn.Module) -> float:
    return sum(p.numel() for p in aux.parameters()) / sum(p.numel() for p in model.parameters())
