"""The offline metrics: held-out loss equals what training logged, 2-D metrics sit beside their
floor, the image metrics score real images near their floor and noise far above it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from layerpar.diffusion import toy_split
from layerpar.errors import ConfigError
from layerpar.generation import denoiser_metrics, load_denoiser
from layerpar.generation import metrics as metrics_module
from layerpar.generation.classifier import FeatureClassifier, FeatureNet, unit_range_images
from layerpar.generation.metrics import held_out_loss, held_out_split, point_metrics


def test_held_out_loss_is_the_runs_logged_test_loss(toy_run: Path) -> None:
    live = load_denoiser(toy_run, ema=False)
    logged = [json.loads(line) for line in (toy_run / "metrics.jsonl").read_text().splitlines()]
    last = [r for r in logged if "test_loss" in r][-1]["test_loss"]
    assert held_out_loss(live, held_out_split(live)) == pytest.approx(last, rel=1e-5)


def test_point_metrics_of_data_against_data_sit_at_the_floor() -> None:
    reference = toy_split("checkerboard", "test", 4000, 0)
    same = toy_split("checkerboard", "train", 1000, 1)
    scores = point_metrics(same, reference)
    assert scores["swd"] < 2 * scores["swd_floor"] + 0.02
    far = point_metrics(torch.randn(1000, 2) * 3, reference)
    assert far["swd"] > 5 * scores["swd"] and far["mmd"] > 10 * scores["mmd"]


def test_more_samples_than_the_floor_allows_is_a_clear_error(toy_run: Path) -> None:
    with pytest.raises(ConfigError, match="use at most 200"):
        denoiser_metrics(load_denoiser(toy_run), 201)  # 400 held-out points


def test_toy_record_has_every_number(toy_run: Path) -> None:
    record = denoiser_metrics(load_denoiser(toy_run), 100, seed=1)
    for key in ("held_out_loss", "swd", "swd_floor", "sampling_s"):
        assert isinstance(record[key], float) and record[key] >= 0, key
    for key in ("mmd", "mmd_floor"):  # the unbiased MMD² estimate can dip below 0 near equality
        assert isinstance(record[key], float) and abs(record[key]) < 10, key
    assert (record["n"], record["seed"], record["sampler"], record["ema"]) == (100, 1, "ddpm", True)


@pytest.mark.timeout(300)
def test_image_metrics_separate_real_digits_from_noise(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.unit.generation.test_classifier import _mnist_or_skip

    _mnist_or_skip()
    from layerpar.generation.classifier import feature_classifier

    classifier = feature_classifier("mnist", epochs=2, train_limit=3000)  # short: not the cached standard net
    monkeypatch.setattr(metrics_module, "feature_classifier", lambda *a, **k: classifier)

    class _Loaded:  # image_metrics reads the data set and whether the model is conditional
        config = type("C", (), {"data": type("D", (), {"dataset": "mnist", "cache_dir": None})})()
        num_classes = 10

    test = type("T", (), {})()
    test.images, test.labels = unit_range_images("mnist", "test", None, 2000)
    real, labels = unit_range_images("mnist", "train", None, 500)
    good = metrics_module.image_metrics(real, labels, _Loaded(), test)  # type: ignore[arg-type]
    noise = metrics_module.image_metrics(torch.rand(500, 1, 28, 28) * 2 - 1, labels, _Loaded(), test)  # type: ignore[arg-type]
    # the floor is n training images against the same n held-out ones: real images score it
    assert good["classifier_fd"] == pytest.approx(good["classifier_fd_floor"], rel=1e-6)
    assert noise["classifier_fd"] > 10 * good["classifier_fd"]
    assert good["cond_acc"] > 0.8 and noise["cond_acc"] < 0.3
    assert good["classifier_test_acc"] == classifier.test_accuracy
    assert isinstance(FeatureClassifier(FeatureNet(), 0.0, "mnist").net, FeatureNet)
