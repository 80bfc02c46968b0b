"""The DeepSpeed pipeline-parallel arm: ``PipelineModule`` + ``PipelineEngine.train_batch``.

Same model, cut points, data, global batch and optimiser as the other pipeline arms; DeepSpeed
runs its own 1F1B-style schedule over M micro-batches (``gradient_accumulation_steps = M``).
What we found about DeepSpeed 0.19.8 on CPU, and how this arm deals with it:

- Cut points.  ``partition_method`` offers ``uniform``, ``parameters`` and ``type:<regex>`` (all
  balance some weight per layer), so arbitrary cut points cannot be forced over a flat list of
  same-typed blocks.  We hand ``PipelineModule`` one ``nn.Sequential`` of blocks per stage with
  ``partition_method="uniform"``: K layers over K stages, i.e. exactly
  ``common.stage_bounds(config)`` (checked after construction).
- Process group.  ``deepspeed.initialize`` wraps the process group the harness already made
  (``init_distributed`` short-circuits when torch.distributed is initialised); no new rendezvous.
  ``DS_ACCELERATOR=cpu`` is forced: the bench arms all run on CPU with one thread per worker.
- JIT.  Wrapping the group builds DeepSpeed's shared-memory all-reduce op (C++, ~30 s the first
  time); ``TORCH_EXTENSIONS_DIR`` defaults to ``<venv>/torch_extensions`` so the build is cached.
  The op only creates ``/dev/shm/deepspeed_allreduce_buffer_*`` when LOCAL_SIZE is set; any this
  run's ranks left are deleted at the end.
- Bytes.  DeepSpeed's pipeline p2p calls ``torch.distributed.send/recv`` (counted by
  ``common.count_bytes``); once per step the last stage *broadcasts* its loss over the pipeline group,
  which ``count_bytes`` does not see, so this arm counts broadcasts too (root: tensor size ×
  (group size − 1)).  DeepSpeed still all-reduces the gradients over its one-rank data-parallel
  group (no bytes: ``count_bytes`` charges an all-reduce by the size of its group).
- Defaults.  DeepSpeed clips gradients at norm 1.0 unless told otherwise (an extra all-reduce
  per step, and different math); ``gradient_clipping: 0`` matches the other arms.
- Micro-batches.  ``train_batch_size`` = the global batch B, ``train_micro_batch_size_per_gpu``
  = B/M, ``gradient_accumulation_steps`` = M (DeepSpeed averages the M micro-batch losses);
  the optimiser is the other arms' SGD (``make_optimizer``), passed in as a client optimiser.
"""

from __future__ import annotations

import contextlib
import glob
import io
import itertools
import os
import sys
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn import functional as F

from layerpar.bench.common import StepTimes, add_sent_bytes, batch_plan, broadcast_bounds, time_steps
from layerpar.config import RunConfig
from layerpar.errors import ConfigError
from layerpar.parallel.optim import make_optimizer
from layerpar.parallel.setup import build_model_for


def _import_deepspeed() -> Any:
    os.environ["DS_ACCELERATOR"] = "cpu"
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", os.path.join(sys.prefix, "torch_extensions"))
    try:
        import deepspeed
    except ImportError as error:
        raise ConfigError(
            f"the deepspeed arm needs DeepSpeed ({error}): pip install deepspeed, or leave "
            "'deepspeed' out of --arms"
        ) from error
    return deepspeed


def _count_broadcasts() -> None:
    """Add broadcasts (sent by their root) to the bytes ``common.count_bytes`` counts; idempotent."""
    pg_cls = type(dist.distributed_c10d._get_default_group())
    original = pg_cls.broadcast
    if getattr(original, "_layerpar_counted", False):
        return

    def counted(self: Any, tensors: Any, *args: Any, **kw: Any) -> Any:
        opts = args[0] if args else kw.get("opts")
        root = opts if isinstance(opts, int) else getattr(opts, "rootRank", None)  # two overloads
        if root == self.rank():
            for t in tensors if isinstance(tensors, (list, tuple)) else [tensors]:
                add_sent_bytes(t.numel() * t.element_size() * (self.size() - 1))
        return original(self, tensors, *args, **kw)

    counted._layerpar_counted = True  # type: ignore[attr-defined]
    pg_cls.broadcast = counted  # type: ignore[method-assign,assignment]  # patched on purpose


def _remove_shm_buffers() -> None:
    pattern = (
        f"/dev/shm/deepspeed_allreduce_buffer_{os.getuid()}_{os.environ.get('MASTER_ADDR', '')}_"
        f"{os.environ.get('MASTER_PORT', '')}_{dist.get_rank()}"
    )
    for path in glob.glob(pattern):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def arm_deepspeed(config: RunConfig, warmup: int, steps: int, *, microbatches: int, **_: Any) -> StepTimes:
    """DeepSpeed's ``PipelineEngine.train_batch`` over ``microbatches`` (module docstring)."""
    deepspeed = _import_deepspeed()
    from deepspeed.pipe import PipelineModule

    world = dist.get_world_size()
    batch = config.train.batch_size
    if batch % microbatches:
        raise ConfigError(
            f"the deepspeed arm needs batch_size={batch} divisible by --microbatches={microbatches}"
        )
    model = build_model_for(config)[0]
    bounds = broadcast_bounds(config)
    stages = [nn.Sequential(*model.blocks[a:b]) for a, b in itertools.pairwise(bounds)]
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # DeepSpeed prints its set-up on rank 0
            # With torch.distributed initialised this wraps the existing group (and builds the op).
            deepspeed.init_distributed(dist_backend="gloo")
            pipe = PipelineModule(
                layers=stages, num_stages=world, loss_fn=F.cross_entropy, partition_method="uniform"
            )
        if list(pipe.parts) != list(range(world + 1)):
            raise RuntimeError(f"DeepSpeed partitioned into {pipe.parts}, wanted one stage per layer")
        optimizer, scheduler = make_optimizer(pipe.parameters(), config.optim, warmup + steps)
        ds_config = {
            "train_batch_size": batch,
            "train_micro_batch_size_per_gpu": batch // microbatches,
            "gradient_accumulation_steps": microbatches,
            "gradient_clipping": 0.0,  # DeepSpeed clips at norm 1.0 unless told; no other arm clips
            "steps_per_print": 10**9,
            "wall_clock_breakdown": False,
            "fp16": {"enabled": False},
            "bf16": {"enabled": False},
        }
        with contextlib.redirect_stdout(io.StringIO()):
            engine, _, _, _ = deepspeed.initialize(
                model=pipe, optimizer=optimizer, lr_scheduler=scheduler, config=ds_config
            )
        _count_broadcasts()
        torch.set_num_threads(1)  # one device = one core, whatever DeepSpeed set up
        plan = batch_plan(config)

        def step(i: int) -> None:
            x, y = plan.batch(i)
            engine.train_batch(iter(zip(x.chunk(microbatches), y.chunk(microbatches))))

        return time_steps(step, warmup, steps)
    finally:
        _remove_shm_buffers()
