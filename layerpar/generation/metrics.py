"""Offline metrics of a trained denoiser, with fixed seeds and sample counts so arms compare.

* every denoiser: the held-out denoising loss on the run's fixed (x₀, t, ε) draws;
* 2-D data: sliced Wasserstein distance and MMD between n samples and n held-out points,
  beside the data-vs-data floor (the same metric between two disjoint sets of n held-out points);
* images: the Fréchet distance in the features of layerpar's own MNIST / Fashion-MNIST
  classifier (``classifier.py``; not FID) beside that of n training images, and the conditional
  accuracy (the classifier agrees with the label a sample was drawn for) beside the
  classifier's test accuracy.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from layerpar.data import load_dataset
from layerpar.diffusion import floor, frechet_distance, mmd_rbf, sliced_wasserstein
from layerpar.errors import ConfigError
from layerpar.generation.classifier import feature_classifier, unit_range_images
from layerpar.generation.load import LoadedDenoiser
from layerpar.generation.sample import SamplerSettings, draw_samples, sampler_settings
from layerpar.parallel.denoising import is_toy, load_denoiser_data
from layerpar.parallel.evaluate import evaluate_serial
from layerpar.parallel.objective import objective_from


def held_out_split(loaded: LoadedDenoiser) -> Any:
    """The run's held-out x₀ (toy points, or images in [−1, 1]) and labels."""
    config = loaded.config
    if is_toy(config.data.dataset):
        return load_denoiser_data(config, None, None)[1]
    data = config.data
    train = load_dataset(data.dataset, "train", cache_dir=data.cache_dir, limit=1, progress=False)
    test = load_dataset(data.dataset, "test", cache_dir=data.cache_dir, progress=False)
    return load_denoiser_data(config, train, test)[1]


def held_out_loss(loaded: LoadedDenoiser, test: Any) -> float:
    """The denoising loss on the run's fixed held-out draws (what training logs as test_loss)."""
    held_out: Any = loaded.task.held_out(test)  # NoisedData: images, labels (targets) and cond
    objective = objective_from(loaded.config.train.loss, denoiser=True)
    result = evaluate_serial(
        [loaded.model], held_out, None, objective, device=torch.device("cpu"), dtype=torch.float32
    )
    return result["test_loss"]


def _check_count(n: int, available: int) -> None:
    if 2 * n > available:
        raise ConfigError(
            f"--metrics-n {n}: the floor compares two disjoint sets of n held-out samples and there are "
            f"{available}; use at most {available // 2}"
        )


def point_metrics(samples: torch.Tensor, reference: torch.Tensor) -> dict[str, float]:
    """SWD and MMD of 2-D samples against held-out points, with their floors."""
    n = len(samples)
    _check_count(n, len(reference))
    held = reference[:n].float()
    return {
        "swd": sliced_wasserstein(samples.float(), held),
        "swd_floor": floor(sliced_wasserstein, reference[: 2 * n].float()),
        "mmd": mmd_rbf(samples.float(), held),
        "mmd_floor": floor(mmd_rbf, reference[: 2 * n].float()),
    }


def image_metrics(
    samples: torch.Tensor, labels: torch.Tensor, loaded: LoadedDenoiser, test: Any
) -> dict[str, float]:
    """Classifier Fréchet distance and conditional accuracy of generated images.

    The floor is the distance of n *training* images to the same n held-out ones: what a model
    that reproduced its training data exactly would score (MNIST's test writers differ from its
    training writers, so two halves of the test set would set the bar too low)."""
    n = len(samples)
    _check_count(n, len(test.images))
    data = loaded.config.data
    classifier = feature_classifier(data.dataset, data.cache_dir)
    features, predictions = classifier.features_and_predictions(samples)
    held_out = classifier.features_and_predictions(test.images[:n])[0]
    training_images = unit_range_images(data.dataset, "train", data.cache_dir, n)[0]
    training = classifier.features_and_predictions(training_images)[0]
    out = {
        "classifier_fd": frechet_distance(features, held_out),
        "classifier_fd_floor": frechet_distance(training, held_out),
        "classifier_test_acc": classifier.test_accuracy,
    }
    if loaded.num_classes is not None:
        out["cond_acc"] = float((predictions == labels).float().mean())
    return out


def denoiser_metrics(
    loaded: LoadedDenoiser,
    n: int,
    *,
    seed: int = 0,
    settings: SamplerSettings | None = None,
    progress: bool = False,
    drawn: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> dict[str, Any]:
    """Every metric of ``loaded`` from ``n`` samples drawn with ``seed`` (a JSON-ready dict).

    ``drawn`` passes samples and labels already drawn as ``draw_samples(loaded, n, seed=seed,
    settings=settings)`` would (so a caller that also plots them samples once)."""
    settings = settings or sampler_settings(loaded)
    test = held_out_split(loaded)
    _check_count(n, len(test))
    record: dict[str, Any] = {
        "origin": loaded.origin,
        "ema": loaded.ema,
        "n": n,
        "seed": seed,
        "sampler": settings.method,
        "sample_steps": settings.steps,
        "guidance": settings.guidance,
        "held_out_loss": held_out_loss(loaded, test),
    }
    start = time.perf_counter()
    samples, labels = drawn or draw_samples(loaded, n, seed=seed, settings=settings, progress=progress)
    if drawn is None:
        record["sampling_s"] = time.perf_counter() - start
    if len(samples) != n:
        raise ConfigError(f"{len(samples)} samples were passed for metrics over n = {n}")
    if loaded.is_image:
        record.update(image_metrics(samples, labels, loaded, test))
    else:
        record.update(point_metrics(samples, test.images))
    return record
