"""The diffusion task of a run: a denoiser's training inputs drawn from the step seed, its data,
and the fixed held-out set its loss is evaluated on.

Every worker draws a global batch's (t, ε, label dropout) from a generator seeded by the step
(``BatchPlan`` calls ``noise_batch`` on the whole global batch, then cuts it), so no data and no
noise is ever sent.  The conditioning a denoiser's modules receive is ``(B, 2)``: model time and
class index (the null label ``num_classes`` when dropped, or for unconditional data).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from layerpar.config import RunConfig
from layerpar.data import dataset_info, normalization
from layerpar.data.seeding import generator_for
from layerpar.diffusion import TOY_DISTRIBUTIONS, draw_labels, objective_for, toy_split
from layerpar.errors import ConfigError
from layerpar.parallel.user_data import TensorData

TOY_TRAIN_SAMPLES = 20_000
TOY_TEST_SAMPLES = 10_000
DATA_SEED = 0
"""The toy data sets are one fixed draw (a finite training set), whatever the training seed."""


@dataclass(frozen=True, eq=False)
class NoisedData:
    """A held-out set of fixed draws: inputs x_t, targets (ε or velocity), conditioning."""

    images: torch.Tensor
    labels: torch.Tensor
    cond: torch.Tensor

    def __len__(self) -> int:
        return int(self.images.shape[0])


def is_toy(dataset: str) -> bool:
    return dataset in TOY_DISTRIBUTIONS


def data_shape(config: RunConfig) -> tuple[tuple[int, ...], int | None]:
    """(shape of one x₀, classes the denoiser is conditioned on: None for unconditional)."""
    if is_toy(config.data.dataset):
        return (2,), None
    info = dataset_info(config.data.dataset)
    classes = info.num_classes if config.diffusion.conditional else None
    return (info.channels, info.height, info.width), classes


def load_denoiser_data(config: RunConfig, train: Any, test: Any) -> tuple[Any, Any]:
    """x₀ of the run: the toy points, or images rescaled from the data set's standardisation to
    [−1, 1] (the range DDPM's clipping and the samplers assume)."""
    name = config.data.dataset
    if is_toy(name):
        n_train = config.data.train_limit or TOY_TRAIN_SAMPLES
        n_test = config.data.test_limit or TOY_TEST_SAMPLES
        train, test = (
            toy_split(name, split, n, DATA_SEED) for split, n in (("train", n_train), ("test", n_test))
        )
        return TensorData(train, _no_labels(train)), TensorData(test, _no_labels(test))
    mean, std = normalization(name)
    return _to_unit_range(train, mean, std), _to_unit_range(test, mean, std)


def _no_labels(points: torch.Tensor) -> torch.Tensor:
    return torch.zeros(len(points), dtype=torch.int64)


def _to_unit_range(data: Any, mean: float, std: float) -> TensorData:
    """Standardised pixels back to [0, 1], then to [−1, 1]."""
    return TensorData((data.images * std + mean) * 2 - 1, data.labels)


class DenoisingTask:
    """Turns batches of (x₀, y) into a denoiser's (x_t, target, conditioning)."""

    def __init__(self, config: RunConfig) -> None:
        f = config.diffusion
        try:
            self.objective = objective_for(f.objective, f.schedule, f.timesteps)
        except ValueError as error:
            raise ConfigError(f"diffusion: {error}") from None
        self.num_classes = data_shape(config)[1]
        self.label_dropout = f.label_dropout
        self.seed = config.train.seed
        self.eval_samples = f.eval_samples

    @property
    def null_label(self) -> int:
        """The label of unconditional samples (and of the dropped ones)."""
        return self.num_classes or 0

    def conditioning(self, time: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return torch.stack([time, labels.to(time.dtype)], dim=1)

    def noise_batch(
        self, x0: torch.Tensor, labels: torch.Tensor, step: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The global batch of ``step``: every process draws the same."""
        generator = generator_for("diffusion", self.seed, step)
        noised = self.objective.draw(x0, generator)
        if self.num_classes:
            labels = draw_labels(labels, self.num_classes, self.label_dropout, generator)
        else:
            labels = torch.full_like(labels, self.null_label)
        return noised.x_t, noised.target, self.conditioning(noised.time, labels)

    def held_out(self, test: Any) -> NoisedData:
        """The first ``eval_samples`` test samples with one fixed (t, ε) draw each (the same for
        every seed, method and layout), labels kept: the held-out denoising loss's set."""
        count = min(len(test), self.eval_samples)
        x0, labels = test.images[:count], test.labels[:count]
        noised = self.objective.draw(x0, generator_for("diffusion-held-out", 0))
        if not self.num_classes:
            labels = torch.full_like(labels, self.null_label)
        return NoisedData(noised.x_t, noised.target, self.conditioning(noised.time, labels))
