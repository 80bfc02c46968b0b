"""The feature classifier the image metrics use: a small CNN layerpar trains itself.

The Fréchet distance of generated images is taken in this network's 128-d penultimate features
(so it is *not* FID, whose Inception features know nothing of MNIST), and the conditional
accuracy is its accuracy on generated images against the labels they were drawn for.  It is
trained once per data set, deterministically (seed 0, one thread), and cached beside the data
(``<cache>/feature_nets/<dataset>-v1.pt``, with its test accuracy) so every arm, seed and
machine scores samples with the same network.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from layerpar.checkpoint import load_checkpoint, save_atomic
from layerpar.data import load_dataset, normalization, resolve_cache_dir
from layerpar.errors import ConfigError

FEATURE_DATASETS = ("mnist", "fashion_mnist")
VERSION = "v1"
"""Bump when the network or its training changes: cached nets of another version are retrained."""


class FeatureNet(nn.Module):
    """conv32-pool-conv64-pool-fc128-fc10 on 28×28 images in [−1, 1]."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.fc = nn.Linear(64 * 7 * 7, 128)
        self.head = nn.Linear(128, classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return F.relu(self.fc(x.flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@dataclass(frozen=True, eq=False)
class FeatureClassifier:
    """A trained ``FeatureNet`` and its accuracy on the data set's test split."""

    net: FeatureNet
    test_accuracy: float
    dataset: str

    @torch.no_grad()
    def features_and_predictions(
        self, images: torch.Tensor, batch: int = 1000
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(128-d features, predicted classes) of images in [−1, 1]."""
        self.net.eval()
        feats, preds = [], []
        for start in range(0, len(images), batch):
            f = self.net.features(images[start : start + batch].float())
            feats.append(f)
            preds.append(self.net.head(f).argmax(1))
        return torch.cat(feats), torch.cat(preds)


def unit_range_images(
    dataset: str, split: str, cache_dir: str | Path | None, limit: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """A split's images in [−1, 1] (the range a denoiser generates in) and labels."""
    data = load_dataset(dataset, split, cache_dir=cache_dir, limit=limit, progress=False)  # type: ignore[arg-type]
    mean, std = normalization(dataset)
    return (data.images * std + mean) * 2 - 1, data.labels


def _train(
    dataset: str, cache_dir: str | Path | None, epochs: int, train_limit: int | None
) -> FeatureClassifier:
    images, labels = unit_range_images(dataset, "train", cache_dir, train_limit)
    test_images, test_labels = unit_range_images(dataset, "test", cache_dir, None)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread: the same weights on every machine
    try:
        torch.manual_seed(0)
        net = FeatureNet()
        optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
        order = torch.Generator().manual_seed(0)
        for _ in range(epochs):
            for batch in torch.randperm(len(images), generator=order).split(128):
                optimizer.zero_grad(set_to_none=True)
                F.cross_entropy(net(images[batch]), labels[batch]).backward()
                optimizer.step()
        classifier = FeatureClassifier(net, 0.0, dataset)
        predictions = classifier.features_and_predictions(test_images)[1]
    finally:
        torch.set_num_threads(threads)
    accuracy = float((predictions == test_labels).float().mean())
    return FeatureClassifier(net, accuracy, dataset)


def feature_classifier_exists(dataset: str) -> None:
    """Raise a clear error for a data set without a feature classifier."""
    if dataset not in FEATURE_DATASETS:
        raise ConfigError(
            f"image metrics need a feature classifier, which exists for {', '.join(FEATURE_DATASETS)}; "
            f"not for {dataset!r}"
        )


def cached_path(dataset: str, cache_dir: str | Path | None) -> Path:
    return resolve_cache_dir(cache_dir) / "feature_nets" / f"{dataset}-{VERSION}.pt"


def feature_classifier(
    dataset: str,
    cache_dir: str | Path | None = None,
    *,
    epochs: int = 2,
    train_limit: int | None = None,
    use_cache: bool = True,
) -> FeatureClassifier:
    """The feature classifier of ``dataset`` (trained on first use, ~30 s on one core, then
    cached).  ``train_limit``/``epochs`` other than the defaults never touch the cache (tests)."""
    feature_classifier_exists(dataset)
    standard = epochs == 2 and train_limit is None and use_cache
    path = cached_path(dataset, cache_dir)
    if standard and path.is_file():
        saved = load_checkpoint(path)
        net = FeatureNet()
        net.load_state_dict(saved["model"])
        return FeatureClassifier(net, float(saved["test_accuracy"]), dataset)
    classifier = _train(dataset, cache_dir, epochs, train_limit)
    if standard:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_atomic({"model": classifier.net.state_dict(), "test_accuracy": classifier.test_accuracy}, path)
    return classifier
