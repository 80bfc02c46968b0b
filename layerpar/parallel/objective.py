"""The task loss of the last module, and what evaluation reports about it.

Cross-entropy over class indices by default; a user's own loss (``train.loss`` or the API's
``loss=``) is any ``fn(output, target) -> batch-mean loss``.  Accuracy is reported whenever the
targets are class indices and the output has one score per class.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from layerpar.errors import ConfigError

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def is_classification(output: torch.Tensor, target: torch.Tensor) -> bool:
    return output.dim() == 2 and target.dim() == 1 and not target.is_floating_point()


@dataclass(frozen=True)
class Objective:
    loss_fn: LossFn = F.cross_entropy

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.loss_fn(output, target)

    def step_metrics(
        self, output: torch.Tensor, target: torch.Tensor, loss: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Training-step metrics as tensors (no host sync)."""
        metrics = {"loss": loss.detach()}
        if is_classification(output, target):
            metrics["acc"] = (output.detach().argmax(1) == target).float().mean()
        return metrics


def import_object(spec: str, what: str) -> object:
    """``package.module:attribute`` -> the attribute (a clear error when it does not resolve)."""
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise ConfigError(f"{what}={spec!r} must look like package.module:function")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ConfigError(
            f"{what}={spec!r}: cannot import {module_name!r} ({error}); is it on PYTHONPATH?"
        ) from error
    try:
        return getattr(module, attribute)
    except AttributeError:
        raise ConfigError(f"{what}={spec!r}: module {module_name!r} has no attribute {attribute!r}") from None


def objective_from(loss: str | LossFn | None, *, denoiser: bool = False) -> Objective:
    """The objective of a config's ``train.loss`` (or a callable passed through the API); a
    denoiser's default is the mean squared error of its ε or velocity prediction."""
    if loss is None:
        return Objective(F.mse_loss) if denoiser else Objective()
    fn = import_object(loss, "train.loss") if isinstance(loss, str) else loss
    if not callable(fn):
        raise ConfigError(f"train.loss={loss!r} is not callable: give a function fn(output, target) -> loss")
    return Objective(fn)
