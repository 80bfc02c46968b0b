"""The feature classifier behind the image metrics: trained by layerpar on the real data set,
cached, and refused for data sets it does not exist for."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from layerpar.checkpoint import save_atomic
from layerpar.data import fetch_dataset
from layerpar.errors import ConfigError, LayerparError
from layerpar.generation.classifier import FeatureNet, cached_path, feature_classifier


def _mnist_or_skip() -> None:
    try:
        fetch_dataset("mnist", progress=False)
    except LayerparError as error:  # no cached copy and no offline route on this machine
        pytest.skip(f"MNIST is not reachable here: {error}")


@pytest.mark.timeout(300)
def test_a_short_training_already_classifies_mnist() -> None:
    _mnist_or_skip()
    # 3000 images, two epochs: seconds; the cached standard net (2 full epochs) is better
    classifier = feature_classifier("mnist", epochs=2, train_limit=3000)
    assert classifier.test_accuracy > 0.85
    features, predictions = classifier.features_and_predictions(torch.zeros(3, 1, 28, 28))
    assert features.shape == (3, 128) and predictions.shape == (3,)


def test_the_cached_net_is_loaded_not_retrained(tmp_path: Path) -> None:
    torch.manual_seed(5)
    net = FeatureNet()
    save_atomic({"model": net.state_dict(), "test_accuracy": 0.5}, cached_path("mnist", tmp_path))
    # tmp_path holds no MNIST: training would fail, so this can only be the cached net
    loaded = feature_classifier("mnist", tmp_path)
    assert loaded.test_accuracy == 0.5
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), loaded.net.state_dict().values()))


def test_only_mnist_style_data_sets_have_one() -> None:
    with pytest.raises(ConfigError, match="mnist, fashion_mnist"):
        feature_classifier("digits")
