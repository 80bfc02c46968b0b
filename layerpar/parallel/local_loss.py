"""Local losses of the penalty and augmented-Lagrangian methods, and their AL updates.

DESIGN.md §2, steps 3 and 7.  For module k < K with output h, predicted state a and multiplier m
(both detached), over a batch of B samples:

    L_k = (1/B) Σ_i [ <m_i, h_i> + (β/2) ||h_i − a_i||² ]          (penalty: m ≡ 0)

Given the next module's per-sample input adjoint v = B · ∂L_{k+1}/∂u_{k+1}:

    λ⁺ = h + (m − v)/β,   μ⁺ = v
"""

from __future__ import annotations

import torch


def local_loss(
    h: torch.Tensor, state: torch.Tensor, multiplier: torch.Tensor | None, beta: float
) -> torch.Tensor:
    """L_k for a batch; ``multiplier=None`` is the penalty method."""
    batch = h.shape[0]
    loss = (beta / 2) * (h - state).pow(2).sum()
    if multiplier is not None:
        loss = loss + (multiplier * h).sum()
    return loss / batch


def al_targets(
    h: torch.Tensor,
    multiplier: torch.Tensor | None,
    adjoint_next: torch.Tensor,
    beta: float,
    step_clip: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(λ⁺, μ⁺): the AuxNet's targets after the next module reported its input adjoint.

    ``step_clip`` bounds each element of the AL step (m − v)/β; a poor multiplier prediction
    otherwise throws the state target far from h (DESIGN.md §2, failure mode 4).
    """
    m = multiplier if multiplier is not None else torch.zeros_like(h)
    step = (m - adjoint_next) / beta
    if step_clip is not None:
        step = step.clamp(-step_clip, step_clip)
    return h + step, adjoint_next


def constraint_residual(h: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
    """||h − a|| / ||h||, the relative violation of the constraint h_k = a_k (||h − a|| when
    h = 0).  A 0-d tensor, so logging it costs no host sync inside the step."""
    with torch.no_grad():
        norm, gap = h.norm(), (h - state).norm()
        return torch.where(norm > 0, gap / norm.clamp_min(torch.finfo(norm.dtype).tiny), gap)


def beta_at(beta: float, beta_final: float | None, progress: float) -> float:
    """β at ``progress`` ∈ [0, 1] of the parallel phase: constant, or geometric continuation."""
    if beta_final is None:
        return beta
    progress = min(max(progress, 0.0), 1.0)
    return float(beta * (beta_final / beta) ** progress)
