"""The AuxNet's training objective (DESIGN.md §2, step 8)."""

from __future__ import annotations

import torch


def squared_error(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """||prediction − target||² summed over a sample's features, mean over the batch."""
    return (prediction - target).pow(2).sum() / prediction.shape[0]


def aux_loss(
    state: torch.Tensor,
    multiplier: torch.Tensor | None,
    state_target: torch.Tensor,
    multiplier_target: torch.Tensor | None,
    gamma: float,
) -> torch.Tensor:
    """||a_k − λ⁺_k||² + γ ||m_k − μ⁺_k||² (the multiplier term only when both exist)."""
    loss = squared_error(state, state_target)
    if multiplier is not None and multiplier_target is not None and gamma > 0:
        loss = loss + gamma * squared_error(multiplier, multiplier_target)
    return loss
