"""Build, identically in every process, the model, its partition and the AuxNet of a run.

Every worker builds the whole backbone from the run's seed and keeps its own module, so all
workers agree on the initial parameters and the boundary shapes without sending any of them.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from layerpar.auxnet import AuxNet, boundary_shapes, build_auxnet
from layerpar.config import RunConfig
from layerpar.data import dataset_info
from layerpar.models import Backbone, build_model
from layerpar.parallel.comm import Comm
from layerpar.parallel.layout import Layout
from layerpar.parallel.partition import Partition, split
from layerpar.parallel.stage import Oracle, StageWorker


@dataclass
class Setup:
    """What every worker of a run agrees on."""

    config: RunConfig
    input_shape: tuple[int, ...]
    num_classes: int
    model: Backbone
    partition: Partition
    boundary_shapes: list[tuple[int, ...]]
    aux: AuxNet | None
    layout: Layout
    device: torch.device
    dtype: torch.dtype


def torch_dtype(name: str) -> torch.dtype:
    return {"float32": torch.float32, "float64": torch.float64}[name]


def resolve_device(config: RunConfig, local_rank: int = 0) -> torch.device:
    """``auto``: this worker's GPU (LOCAL_RANK) when CUDA is available, else the CPU."""
    wanted = config.parallel.device
    if wanted == "cuda" or (wanted == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            from layerpar.errors import ConfigError

            raise ConfigError("parallel.device=cuda but CUDA is not available; use auto or cpu")
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def build_model_for(config: RunConfig) -> tuple[Backbone, tuple[int, ...], int]:
    """The backbone of ``config``, initialised from its seed; also the input shape and classes."""
    info = dataset_info(config.data.dataset)
    torch.manual_seed(config.train.seed)
    model = build_model(
        config.model.name,
        in_channels=info.channels,
        image_size=info.height,
        num_classes=info.num_classes,
        width=config.model.width,
        hidden=config.model.hidden,
        depth=config.model.depth,
    )
    return model, (info.channels, info.height, info.width), info.num_classes


def choose_bounds(config: RunConfig, model: Backbone, input_shape: tuple[int, ...]) -> tuple[int, ...]:
    """Cut points for the configured balance (``time`` profiles one batch on this machine)."""
    sample = torch.randn(min(config.train.batch_size, 64), *input_shape)
    part = split(model, config.parallel.stages, config.parallel.balance, sample=sample)
    return part.bounds


def build_setup(
    config: RunConfig,
    device: torch.device | None = None,
    bounds: tuple[int, ...] | None = None,
) -> Setup:
    """Everything a run's workers share.  Pass ``bounds`` chosen once (e.g. by rank 0)."""
    device = device or torch.device("cpu")
    dtype = torch_dtype(config.train.dtype)
    model, input_shape, num_classes = build_model_for(config)
    if bounds is None:
        bounds = choose_bounds(config, model, input_shape)
    partition = _partition_at(model, bounds)
    shapes = boundary_shapes(partition.stages, torch.zeros(2, *input_shape))
    aux = None
    # The pipelined method feeds modules their true inputs: it has no use for an AuxNet.
    if config.parallel.stages > 1 and config.layerpar.method != "pipelined":
        torch.manual_seed(config.train.seed + 1)
        aux = build_auxnet(
            input_shape,
            shapes,
            width=config.aux.width,
            blocks_per_stage=config.aux.blocks_per_stage,
            multiplier_heads=config.aux.multiplier_heads and config.layerpar.method == "al",
            label_classes=num_classes if config.aux.label_conditioned_multipliers else None,
            stem_stride=config.aux.stem_stride,
        ).to(device=device, dtype=dtype)
    model.to(device=device, dtype=dtype)
    layout = Layout(config.parallel.stages, config.parallel.replicas)
    return Setup(config, input_shape, num_classes, model, partition, shapes, aux, layout, device, dtype)


def _partition_at(model: Backbone, bounds: tuple[int, ...]) -> Partition:
    stages = tuple(model.slice(a, b) for a, b in zip(bounds, bounds[1:]))
    return Partition(stages=stages, bounds=tuple(bounds), block_costs=tuple([1.0] * len(model)))


def make_worker(
    setup: Setup,
    rank: int,
    comm: Comm,
    total_steps: int,
    *,
    own_copy: bool,
    oracle: Oracle | None = None,
) -> StageWorker:
    """The worker of ``rank``.  ``own_copy`` gives it private module/AuxNet objects (needed when
    several workers live in one process and must not share parameters)."""
    stage = setup.layout.stage_of(rank)
    replica = setup.layout.replica_of(rank)
    module = setup.partition.stages[stage]
    aux = setup.aux
    if own_copy:
        module = module if replica == 0 else copy.deepcopy(module)
        aux = copy.deepcopy(aux)
    return StageWorker(
        setup.config,
        setup.layout,
        stage,
        replica,
        module,
        aux,
        setup.boundary_shapes,
        comm,
        total_steps,
        device=setup.device,
        dtype=setup.dtype,
        oracle=oracle,
    )
