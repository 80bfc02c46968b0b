"""A local classifier head whose input gradient predicts a boundary's adjoint (issue 11).

The adjoint at boundary k is ∂ℓ/∂h_k = J_{>k}(h_k)ᵀ (p − onehot(y)) / B: the later modules'
Jacobian applied to the label error.  An x-only multiplier head cannot predict it (its best
guess is E[v | x] ≈ 0, docs/parity.md); this head sees the module's own output h_k *and* the
label, and its prediction is the gradient of its own cross-entropy,

    m̂_k = c_k · ∇_h CE(head_k(h_k), y),

a shallow stand-in D̃_k for the later modules (DGL / AugLocal / cDNI style), trained on the
labels (DGL's local loss).  ``c_k`` is the least-squares scale of the prediction against the
true adjoints as they arrive, c = Σ⟨m, v⟩ / Σ⟨m, m⟩ over an exponential window, floored at 0:
a head whose gradient is orthogonal to the adjoint gets c → 0 and predicts nothing.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

CALIBRATION_DECAY = 0.99
"""Weight of the past in the running sums Σ⟨m, v⟩ and Σ⟨m, m⟩ (about the last 100 arrivals)."""


def head_for(shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """The head for boundary activations of ``shape`` (without the batch dimension): two 3×3
    convolutions (the second strided), pooling and a linear classifier for feature maps; a
    two-layer MLP for vectors.  On ResNet-20 its cost is a few per cent of a module's."""
    if len(shape) == 3:
        channels = shape[0]
        return nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(channels, num_classes),
        )
    features = int(torch.Size(shape).numel())
    return nn.Sequential(nn.Flatten(), nn.Linear(features, 128), nn.ReLU(), nn.Linear(128, num_classes))


class AdjointHead:
    """One boundary's head, its Adam optimiser and its calibration against the true adjoints."""

    def __init__(
        self, shape: tuple[int, ...], num_classes: int, lr: float, device: torch.device, dtype: torch.dtype
    ) -> None:
        self.shape = tuple(shape)
        self.dtype = dtype
        self.net = head_for(self.shape, num_classes).to(device=device, dtype=dtype)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=lr)
        self.sum_mv = torch.zeros((), device=device, dtype=torch.float64)
        self.sum_mm = torch.zeros((), device=device, dtype=torch.float64)

    def predict_and_learn(self, h: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The raw prediction ∇_h CE(head(h), y) (unscaled), and the head's loss; one Adam step
        of the head on that loss (its gradient and the prediction come from one backward)."""
        # Under bf16 compute h is bf16: the head runs in the master dtype.
        leaf = h.detach().to(self.dtype).requires_grad_(True)
        loss = F.cross_entropy(self.net(leaf), y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        assert leaf.grad is not None
        return leaf.grad, loss.detach()

    def observe(self, raw: torch.Tensor, adjoint: torch.Tensor) -> torch.Tensor:
        """Fold one (raw prediction, true adjoint) pair into the calibration; their cosine."""
        m, v = raw.flatten().double(), adjoint.flatten().double()
        dot, mm = m @ v, m @ m
        self.sum_mv.mul_(CALIBRATION_DECAY).add_(dot)
        self.sum_mm.mul_(CALIBRATION_DECAY).add_(mm)
        return dot / (mm.sqrt() * v.norm()).clamp_min(1e-300)

    def scale(self) -> torch.Tensor:
        """c = Σ⟨m, v⟩ / Σ⟨m, m⟩ floored at 0 (0 before any adjoint arrived); a tensor, so the
        step reads nothing back from the device."""
        ratio = self.sum_mv / self.sum_mm.clamp_min(1e-300)
        return torch.where(self.sum_mm > 0, ratio.clamp_min(0.0), torch.zeros_like(ratio))

    def state_dict(self) -> dict[str, Any]:
        return {
            "shape": self.shape,
            "net": self.net.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "sum_mv": self.sum_mv,
            "sum_mm": self.sum_mm,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.sum_mv.copy_(state["sum_mv"])
        self.sum_mm.copy_(state["sum_mm"])
