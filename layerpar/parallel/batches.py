"""Every worker draws the identical batch for a step from the shared seed: no data is sent."""

from __future__ import annotations

import torch

from layerpar.data import ArrayDataset, augment_batch, epoch_batches


class BatchPlan:
    """The global batch of every training step, and each data-parallel replica's shard of it."""

    def __init__(
        self,
        dataset: ArrayDataset,
        batch_size: int,
        seed: int,
        *,
        crop_pad: int = 0,
        flip: bool = False,
    ) -> None:
        self.dataset = dataset
        self.batch_size = batch_size
        self.seed = seed
        self.crop_pad = crop_pad
        self.flip = flip
        self.steps_per_epoch = len(dataset) // batch_size
        if self.steps_per_epoch == 0:
            from layerpar.errors import ConfigError

            raise ConfigError(
                f"batch_size={batch_size} is larger than the {len(dataset)} training samples: "
                "lower train.batch_size or raise data.train_limit"
            )
        self._epoch = -1
        self._batches: list[torch.Tensor] = []

    def indices(self, step: int) -> torch.Tensor:
        epoch, index = divmod(step, self.steps_per_epoch)
        if epoch != self._epoch:
            self._batches = epoch_batches(len(self.dataset), self.batch_size, self.seed, epoch)
            self._epoch = epoch
        return self._batches[index]

    def batch(self, step: int, replica: int = 0, replicas: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """(images, labels) of ``step``, augmented, restricted to ``replica``'s shard."""
        idx = self.indices(step)
        images, labels = self.dataset.images[idx], self.dataset.labels[idx]
        if self.crop_pad > 0 or self.flip:
            # Augment the whole global batch, then shard: a sample looks the same whichever
            # replica trains on it, and the in-process reference sees the same pixels.
            images = augment_batch(images, self.seed, step, pad=self.crop_pad, flip=self.flip)
        shard = self.batch_size // replicas
        window = slice(replica * shard, (replica + 1) * shard)
        return images[window], labels[window]
