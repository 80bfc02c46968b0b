"""Every worker draws the identical batch for a step from the shared seed: no data is sent.

With micro-batches (the pipelined method's accumulation) a training step of the loop is one
micro-batch: the global batch of optimiser step s is drawn and augmented exactly as serial
backprop draws its step s, and fed in ``micro`` consecutive parts."""

from __future__ import annotations

from collections.abc import Callable

import torch

from layerpar.data import ArrayDataset, augment_batch, epoch_batches

Noise = Callable[[torch.Tensor, torch.Tensor, int], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
"""(x₀, labels, step) of a global batch -> (x_t, target, conditioning): a denoiser's training
inputs, drawn from the step seed (``parallel/denoising.py``)."""


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
        micro: int = 1,
        noise: Noise | None = None,
    ) -> None:
        self.dataset = dataset
        self.batch_size = batch_size
        self.seed = seed
        self.crop_pad = crop_pad
        self.flip = flip
        self.micro = micro
        self.noise = noise
        self.batches_per_epoch = len(dataset) // batch_size
        self.steps_per_epoch = self.batches_per_epoch * micro
        self.step_samples = batch_size // micro
        """Samples per loop step (a micro-batch)."""
        if self.steps_per_epoch == 0:
            from layerpar.errors import ConfigError

            raise ConfigError(
                f"batch_size={batch_size} is larger than the {len(dataset)} training samples: "
                "lower train.batch_size or raise data.train_limit"
            )
        self._epoch = -1
        self._batches: list[torch.Tensor] = []
        self._global: tuple[int, torch.Tensor, torch.Tensor, torch.Tensor | None] | None = None
        """The last global batch drawn (its micro-batches come in consecutive steps)."""

    def indices(self, step: int) -> torch.Tensor:
        epoch, index = divmod(step, self.batches_per_epoch)
        if epoch != self._epoch:
            self._batches = epoch_batches(len(self.dataset), self.batch_size, self.seed, epoch)
            self._epoch = epoch
        return self._batches[index]

    def batch(self, step: int, replica: int = 0, replicas: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """(images, labels) of ``step``, augmented, restricted to ``replica``'s shard (for a
        denoiser: (x_t, target))."""
        images, labels, _ = self._global_batch(step // self.micro)
        part = self._shard(step, replica, replicas)
        return images[part], labels[part]

    def cond(self, step: int, replica: int = 0, replicas: int = 1) -> torch.Tensor | None:
        """The conditioning of the same shard (a denoiser's (time, label); None otherwise)."""
        cond = self._global_batch(step // self.micro)[2]
        return None if cond is None else cond[self._shard(step, replica, replicas)]

    def _shard(self, step: int, replica: int, replicas: int) -> slice:
        shard = self.step_samples // replicas
        start = (step % self.micro) * self.step_samples + replica * shard
        return slice(start, start + shard)

    def _global_batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        if self._global is None or self._global[0] != step:
            idx = self.indices(step)
            images, labels = self.dataset.images[idx], self.dataset.labels[idx]
            cond = None
            if self.crop_pad > 0 or self.flip:
                # Augment the whole global batch, then cut: a sample looks the same whichever
                # replica or micro-batch trains on it, and serial backprop sees the same pixels.
                images = augment_batch(images, self.seed, step, pad=self.crop_pad, flip=self.flip)
            if self.noise is not None:
                # Noise the whole global batch too: every worker draws the same (t, ε, label
                # dropout) for a sample, whichever module, replica or micro-batch it is in.
                images, labels, cond = self.noise(images, labels, step)
            self._global = (step, images, labels, cond)
        return self._global[1], self._global[2], self._global[3]
