"""Small float64 denoiser runs for the exactness tests (no download: 2-D toy data, sklearn digits).

* :func:`denoiser_config` -- the residual-MLP denoiser on the checkerboard, or a small DiT on
  8×8 digits, DDPM, float64, blocks-balanced.
* :func:`perturb` -- move every weight off its zero initialisation (adaLN-Zero and zero heads
  would make many gradients exactly 0, and a comparison of zeros proves nothing).
* :func:`whole_model_gradients` -- a trainer's per-module gradients under the whole model's
  parameter names, the embedder replicas' gradients summed (what the all-reduce does).
* :func:`serial_denoiser_gradients` -- plain backprop of the denoising loss.
"""

from __future__ import annotations

import copy
import zlib
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from layerpar.config import RunConfig, load_config

BACKBONES = {
    "mlp": ["data.dataset=checkerboard", "model.name=mlp_denoiser", "model.hidden=16", "model.depth=4"],
    "dit": ["data.dataset=digits", "model.name=dit", "model.hidden=16", "model.depth=4"],
}


def denoiser_config(out_dir: str | Path, backbone: str, *overrides: str, stages: int = 2) -> RunConfig:
    return load_config(
        None,
        [
            *BACKBONES[backbone],
            "diffusion.objective=ddpm",
            "diffusion.timesteps=100",
            "data.crop_pad=0",
            "data.train_limit=256",
            "data.test_limit=64",
            f"parallel.stages={stages}",
            "parallel.balance=blocks",
            "train.dtype=float64",
            "train.batch_size=16",
            "train.progress=false",
            "aux.width=8",
            f"train.out_dir={out_dir}",
            *overrides,
        ],
    )


def perturb(trainer: Any, scale: float = 0.05) -> None:
    """Add seeded noise to every weight of every worker; a parameter's noise depends on its name
    in its module only, so the embedder replicas (same names everywhere) stay identical, and
    the trainer's whole model (which shares module 0's objects and the later blocks) sees the
    same weights as the workers."""
    with torch.no_grad():
        for worker in trainer.runner.workers:
            for name, param in worker.module.named_parameters():
                if name.startswith("embedder.") and worker.stage > 0:
                    continue  # added below, from module 0's values
                generator = torch.Generator().manual_seed(zlib.crc32(f"{worker.stage}:{name}".encode()))
                if name.startswith("embedder."):
                    generator = torch.Generator().manual_seed(zlib.crc32(name.encode()))
                param.add_(scale * torch.randn(param.shape, generator=generator, dtype=param.dtype))
        first = trainer.runner.workers[0].module.embedder
        for worker in trainer.runner.workers[1:]:
            worker.module.embedder.load_state_dict(first.state_dict())


def whole_model_gradients(trainer: Any, bounds: tuple[int, ...]) -> dict[str, torch.Tensor]:
    grads: dict[str, torch.Tensor] = {}
    for worker in trainer.runner.workers:
        for (name, _), grad in zip(worker.module.named_parameters(), worker.stage_gradients(), strict=True):
            if name.startswith("embedder."):
                grads[name] = grads[name] + grad if name in grads else grad
                continue
            _, index, rest = name.split(".", 2)
            grads[f"blocks.{bounds[worker.stage] + int(index)}.{rest}"] = grad
    return grads


def serial_denoiser_gradients(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, cond: torch.Tensor
) -> dict[str, torch.Tensor]:
    ref = copy.deepcopy(model)
    ref.zero_grad(set_to_none=True)
    dtype = next(ref.parameters()).dtype
    F.mse_loss(ref(x.to(dtype), cond.to(dtype)), y.to(dtype)).backward()
    return {
        name: p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p)
        for name, p in ref.named_parameters()
    }
