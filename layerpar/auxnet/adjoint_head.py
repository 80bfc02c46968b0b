"""A local classifier head on a boundary that predicts the boundary's adjoint (issue 11).

The adjoint at boundary k is ∂ℓ/∂h_k = J_{>k}(h_k)ᵀ (p − onehot(y)) / B: the later modules'
Jacobian applied to the label error.  An x-only multiplier head cannot predict it (its best
guess is E[v | x] ≈ 0, docs/parity.md); this head sees the module's own output h_k *and* the
label, and predicts in one of two ways (``layerpar.predictor``):

* ``gradient``: m̂ = ∇_h CE(head_k(h_k), y), the head as a shallow stand-in D̃_k for the later
  modules (DGL / AugLocal / cDNI style), trained on the labels (DGL's local loss);
* ``linear``: m̂ = Gᵀ (p̂ − onehot(y)), p̂ the head's softmax, G (classes × features) the least-
  squares fit of the arriving true adjoints on the same label errors: the later modules'
  Jacobian averaged over samples, learnt online at no cost to the module.

Either prediction is scaled by c = Σ⟨m, v⟩ / Σ⟨m, m⟩ over an exponential window of the
arriving pairs, floored at 0: a predictor orthogonal to the adjoint gets c → 0 and predicts
nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
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


PREDICTORS = ("gradient", "linear")


@dataclass
class Prediction:
    """One micro-batch's raw (unscaled) prediction and what the fit needs when its adjoint arrives."""

    raw: torch.Tensor
    label_error: torch.Tensor
    """p̂ − onehot(y) of the head, (batch, classes), in float64."""


class AdjointHead:
    """One boundary's head, its Adam optimiser, the linear predictor's fit and the calibration."""

    def __init__(
        self,
        shape: tuple[int, ...],
        num_classes: int,
        lr: float,
        device: torch.device,
        dtype: torch.dtype,
        predictor: str = "linear",
    ) -> None:
        if predictor not in PREDICTORS:
            raise ValueError(f"predictor {predictor!r}: one of {', '.join(PREDICTORS)}")
        self.shape = tuple(shape)
        self.dtype = dtype
        self.predictor = predictor
        self.num_classes = num_classes
        self.net = head_for(self.shape, num_classes).to(device=device, dtype=dtype)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=lr)
        features = int(torch.Size(self.shape).numel())
        wide = torch.float64  # sums over many steps
        self.error_gram = torch.zeros(num_classes, num_classes, device=device, dtype=wide)  # Σ eᵀe
        self.error_adjoint = torch.zeros(num_classes, features, device=device, dtype=wide)  # Σ eᵀv
        self.sum_mv = torch.zeros((), device=device, dtype=wide)
        self.sum_mm = torch.zeros((), device=device, dtype=wide)

    def predict_and_learn(self, h: torch.Tensor, y: torch.Tensor) -> tuple[Prediction, torch.Tensor]:
        """The raw prediction for this micro-batch and the head's loss; one Adam step of the head
        on that loss (its gradient and the ``gradient`` prediction come from one backward)."""
        # Under bf16 compute h is bf16: the head runs in the master dtype.
        leaf = h.detach().to(self.dtype).requires_grad_(True)
        logits = self.net(leaf)
        loss = F.cross_entropy(logits, y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        assert leaf.grad is not None
        error = logits.detach().double().softmax(1) - F.one_hot(y, self.num_classes).double()
        if self.predictor == "gradient":
            return Prediction(leaf.grad, error), loss.detach()
        raw = (error @ self.jacobian()).to(self.dtype).view_as(leaf) / error.shape[0]
        return Prediction(raw, error), loss.detach()

    def jacobian(self) -> torch.Tensor:
        """G = (Σ eᵀe + ε)⁻¹ Σ eᵀv: the mean Jacobian of the later modules (0 before any fit)."""
        ridge = 1e-6 * self.error_gram.diagonal().mean() + 1e-300
        eye = torch.eye(self.num_classes, dtype=torch.float64, device=self.error_gram.device)
        return torch.linalg.solve(self.error_gram + ridge * eye, self.error_adjoint)

    def observe(self, prediction: Prediction, adjoint: torch.Tensor) -> torch.Tensor:
        """Fold one (prediction, true adjoint) pair into the fit and the calibration; their cosine."""
        m, v = prediction.raw.flatten().double(), adjoint.flatten().double()
        dot, mm = m @ v, m @ m
        self.sum_mv.mul_(CALIBRATION_DECAY).add_(dot)
        self.sum_mm.mul_(CALIBRATION_DECAY).add_(mm)
        # The adjoint is of the micro-batch's mean loss: per sample it is B·v_i.
        error, per_sample = prediction.label_error, adjoint.double().flatten(1) * adjoint.shape[0]
        self.error_gram.mul_(CALIBRATION_DECAY).add_(error.T @ error)
        self.error_adjoint.mul_(CALIBRATION_DECAY).add_(error.T @ per_sample)
        return dot / (mm.sqrt() * v.norm()).clamp_min(1e-300)

    def scale(self) -> torch.Tensor:
        """c = Σ⟨m, v⟩ / Σ⟨m, m⟩ floored at 0 (0 before any adjoint arrived); a tensor, so the
        step reads nothing back from the device."""
        ratio = self.sum_mv / self.sum_mm.clamp_min(1e-300)
        return torch.where(self.sum_mm > 0, ratio.clamp_min(0.0), torch.zeros_like(ratio))

    def state_dict(self) -> dict[str, Any]:
        return {
            "shape": self.shape,
            "error_gram": self.error_gram,
            "error_adjoint": self.error_adjoint,
            "net": self.net.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "sum_mv": self.sum_mv,
            "sum_mm": self.sum_mm,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.error_gram.copy_(state["error_gram"])
        self.error_adjoint.copy_(state["error_adjoint"])
        self.sum_mv.copy_(state["sum_mv"])
        self.sum_mm.copy_(state["sum_mm"])
