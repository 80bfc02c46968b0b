"""Serial backprop (``SerialTrainer``) equals a plain torch training loop exactly in float64
(tolerance 1e-12; the measured difference is 0).

Serial backprop is the oracle every layer-parallel path is tested against, so it is itself
checked here against the most ordinary training loop there is, written out in this file: no
``make_optimizer``, no ``BatchPlan``, no worker or runner.  Only public surfaces of layerpar are
used: the config, ``SerialTrainer(config).fit()`` and its ``model.pt``, and for the loop the
model builder, the data set, the epoch permutation and the augmentation.

What the loop reproduces (and so what the test pins down):

* the model: ``build_model_for`` (seeds torch from ``train.seed``), cast to float64;
* the batches: step ``s`` is batch ``s mod P`` of ``epoch_batches(N, B, seed, s div P)`` with
  ``P = N div B`` (last partial batch dropped), i.e. a fresh permutation every epoch, the run
  crossing two epoch boundaries; the images are augmented *before* the float64 cast with
  ``augment_batch(images, seed, s, pad=crop_pad, flip=flip)`` (random 2-pixel shifts and, here,
  mirrors: a mirrored digit is a wrong digit, but this is an equality test, and flipping
  exercises the flip path);
* the update: mean cross-entropy, ``torch.optim.SGD`` with Nesterov momentum 0.9 and weight
  decay 5e-4, and a per-step cosine factor ``0.5 (1 + cos(pi min(s, T) / T))`` over the
  ``T = round(epochs * P)`` steps through ``LambdaLR`` (``scheduler.step()`` after every
  optimiser step);
* BatchNorm in train mode throughout (batch statistics; running statistics with momentum 0.1).

Evaluation and BatchNorm statistics.  Evaluation runs only after the last step (before
``model.pt`` is written).  It first makes a diagnostic serial pass on step 0's batch in train
mode (no optimiser step, gradients discarded: parameters untouched, running statistics
updated) and then re-estimates the BatchNorm statistics (``parallel/evaluate.py``
``BNReestimation``): every running mean/var is reset and recomputed as the cumulative average
(momentum=None) of train-mode forward passes over the first ``min(N, bn_reestimate_batches * B)``
*un-augmented* training images, in chunks of 500 (a single chunk here, N = 320).  The reset
wipes whatever the training steps and the diagnostic pass left in the buffers, and
``num_batches_tracked`` restarts from 0.  So the test compares

* every **parameter** of ``model.pt`` directly with the loop's (training alone decides them);
* every **BatchNorm buffer** (running mean, running var, num_batches_tracked) with the loop's
  model after the same re-estimation done here by hand: reset, momentum=None, one no-grad
  train-mode forward of those images.

The training-time running statistics are thus not compared (``model.pt`` no longer holds them);
the test checks that they differ from the re-estimated ones, so the re-estimation is real.

Tolerance: max absolute difference <= 1e-12 over all parameters and buffers (the two paths do
the same float64 operations in the same order, so in practice the difference is exactly 0).

Not vacuous: the weights move far from their initial values, and loops that differ only in a
learning rate 1e-9 relatively higher (parameters about 1e-9 apart, a thousand times the
tolerance), without the flips, or without any augmentation, all miss by more than 100x the
tolerance.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from layerpar.config import RunConfig, load_config
from layerpar.data import augment_batch, epoch_batches, load_dataset
from layerpar.parallel.setup import build_model_for
from layerpar.parallel.trainer import SerialTrainer

TRAIN_LIMIT = 320
BATCH = 32
EPOCHS = 2.4  # 10 batches per epoch: 24 steps, two fresh permutations after the first epoch
STEPS = 24
SEED = 3
LR, MOMENTUM, WEIGHT_DECAY = 0.05, 0.9, 5e-4
CROP_PAD = 2
BN_BATCHES = 20  # re-estimation images: min(320, 20 * 32) = 320, one chunk of evaluate_serial's 500
TOLERANCE = 1e-12


def _config(out_dir: Path) -> RunConfig:
    return load_config(None, [
        "data.dataset=digits",
        "model.name=resnet20",
        "parallel.stages=2",  # SerialTrainer makes it one module whatever this says
        "parallel.balance=blocks",
        "train.dtype=float64",
        f"train.batch_size={BATCH}",
        f"train.epochs={EPOCHS}",
        f"train.seed={SEED}",
        "train.eval_every=1000",  # evaluate only after the last step
        "train.progress=false",
        f"train.out_dir={out_dir}",
        "train.run_name=serial",
        f"data.train_limit={TRAIN_LIMIT}",
        "data.test_limit=64",
        f"data.crop_pad={CROP_PAD}",
        "data.flip=true",
        f"optim.lr={LR}",
        f"optim.momentum={MOMENTUM}",
        f"optim.weight_decay={WEIGHT_DECAY}",
        "optim.nesterov=true",
        "optim.schedule=cosine",
        f"layerpar.bn_reestimate_batches={BN_BATCHES}",
    ])


def _bn_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def _plain_loop(config: RunConfig, *, lr: float = LR, pad: int = CROP_PAD,
                flip: bool = True) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """(trained model, its initial state): ordinary backprop, every step written out."""
    model, _, _ = build_model_for(config)
    model.to(torch.float64)
    initial = {k: v.detach().clone() for k, v in model.state_dict().items()}
    train = load_dataset("digits", "train", limit=TRAIN_LIMIT)
    per_epoch = len(train) // BATCH
    total = max(1, round(EPOCHS * per_epoch))
    assert (per_epoch, total) == (10, STEPS)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=MOMENTUM,
                                weight_decay=WEIGHT_DECAY, nesterov=True)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    model.train()
    for step in range(total):
        epoch, index = divmod(step, per_epoch)
        idx = epoch_batches(len(train), BATCH, SEED, epoch)[index]
        images, labels = train.images[idx], train.labels[idx]
        if pad > 0 or flip:
            images = augment_batch(images, SEED, step, pad=pad, flip=flip)
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(images.to(torch.float64)), labels).backward()
        optimizer.step()
        scheduler.step()
    return model, initial


@torch.no_grad()
def _reestimate_bn(model: nn.Module) -> None:
    """What evaluation does before ``model.pt`` is written (see the module docstring)."""
    train = load_dataset("digits", "train", limit=TRAIN_LIMIT)
    images = train.images[: min(len(train), BN_BATCHES * BATCH)]
    assert len(images) <= 500, "more than one re-estimation chunk: reproduce the chunking"
    layers = _bn_layers(model)
    momenta = [layer.momentum for layer in layers]
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None
    model.train()
    model(images.to(torch.float64))
    for layer, momentum in zip(layers, momenta):
        layer.momentum = momentum


def _max_abs(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], keys: list[str]) -> float:
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in keys)


@pytest.mark.timeout(300)
def test_serial_trainer_equals_a_plain_torch_loop_in_float64(tmp_path: Path) -> None:
    config = _config(tmp_path)
    summary = SerialTrainer(config).fit()
    assert summary.steps == STEPS
    saved = torch.load(summary.run_dir / "model.pt", map_location="cpu", weights_only=True)
    got = saved["model"]

    model, initial = _plain_loop(config)
    param_keys = [name for name, _ in model.named_parameters()]
    buffer_keys = [name for name, _ in model.named_buffers()]
    assert sorted(got) == sorted(param_keys + buffer_keys)
    assert buffer_keys and all(got[k].dtype == torch.float64 for k in param_keys)
    trained_buffers = {k: v.clone() for k, v in model.state_dict().items() if k in buffer_keys}
    _reestimate_bn(model)
    want = model.state_dict()

    param_diff = _max_abs(got, want, param_keys)
    buffer_diff = _max_abs(got, want, buffer_keys)
    print(f"\nmax |SerialTrainer - plain loop| after {STEPS} float64 steps: "
          f"parameters {param_diff:.3e}, BatchNorm buffers {buffer_diff:.3e}")
    assert param_diff <= TOLERANCE, f"parameters differ by up to {param_diff:.3e}"
    assert buffer_diff <= TOLERANCE, f"re-estimated BatchNorm buffers differ by up to {buffer_diff:.3e}"
    assert all(int(got[k]) == 1 for k in buffer_keys if k.endswith("num_batches_tracked"))

    # Not vacuous: training moved the weights, the re-estimation changed the statistics, ...
    moved = _max_abs(want, initial, param_keys)
    stats = [k for k in buffer_keys if k.endswith(("running_mean", "running_var"))]
    restats = _max_abs(want, trained_buffers, stats)
    print(f"max |trained - initial| parameters {moved:.3e}; "
          f"max |re-estimated - training-time| BN statistics {restats:.3e}")
    assert moved > 1e-2
    assert restats > 1e-3
    # ... and a loop that differs slightly misses by far more than the tolerance.
    variants = (("lr x (1 + 1e-9)", {"lr": LR * (1 + 1e-9)}), ("no flip", {"flip": False}),
                ("no augmentation", {"pad": 0, "flip": False}))
    for label, kwargs in variants:
        other, _ = _plain_loop(config, **kwargs)
        miss = _max_abs(got, other.state_dict(), param_keys)
        print(f"plain loop with {label}: parameters differ by {miss:.3e}")
        assert miss > 100 * TOLERANCE, label
