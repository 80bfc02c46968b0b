"""Build, identically in every process, the model, its partition, the method and the AuxNet of
a run.

Every worker builds the whole backbone from the run's seed and keeps its own module, so all
workers agree on the initial parameters and the boundary shapes without sending any of them.
The cut points are the one thing chosen once (``balance: time`` measures this machine) and
broadcast from rank 0 (``distributed_bounds``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from layerpar.auxnet import AuxNet, boundary_shapes, build_auxnet
from layerpar.auxnet.ablation import ORACLE_PARTS
from layerpar.auxnet.conditional import build_conditional_auxnet
from layerpar.config import RunConfig
from layerpar.data import dataset_info
from layerpar.errors import ConfigError
from layerpar.models import Backbone, build_model
from layerpar.models.backbone import as_backbone
from layerpar.parallel.aux_trainer import Oracle
from layerpar.parallel.checkpoints import latest_set
from layerpar.parallel.comm import Comm
from layerpar.parallel.denoising import data_shape
from layerpar.parallel.layout import Layout
from layerpar.parallel.methods import Method, check_config, method_class
from layerpar.parallel.objective import Objective, import_object
from layerpar.parallel.partition import Partition, split
from layerpar.parallel.run import run_dir_for
from layerpar.parallel.stage import StageWorker


@dataclass
class Setup:
    """What every worker of a run agrees on."""

    config: RunConfig
    input_shape: tuple[int, ...]
    num_classes: int | None
    model: Backbone
    partition: Partition
    boundary_shapes: list[tuple[int, ...]]
    aux: AuxNet | None
    layout: Layout
    device: torch.device
    dtype: torch.dtype
    method: type[Method]
    objective: Objective


def torch_dtype(name: str) -> torch.dtype:
    return {"float32": torch.float32, "float64": torch.float64}[name]


def resolve_device(config: RunConfig, local_rank: int = 0) -> torch.device:
    """``auto``: this worker's GPU (LOCAL_RANK) when CUDA is available, else the CPU."""
    wanted = config.parallel.device
    if wanted == "cuda" or (wanted == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ConfigError("parallel.device=cuda but CUDA is not available; use auto or cpu")
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def build_model_for(
    config: RunConfig, input_shape: tuple[int, ...] | None = None
) -> tuple[Backbone, tuple[int, ...], int | None]:
    """The backbone of ``config``, initialised from its seed; also the input shape and classes.

    ``model.factory`` (a user's ``package.module:function``) wins over ``model.name``; the input
    shape then comes from the data (``input_shape``) unless ``data.dataset`` names one."""
    torch.manual_seed(config.train.seed)
    if config.model.factory is not None:
        factory = import_object(config.model.factory, "model.factory")
        if not callable(factory):
            raise ConfigError(f"model.factory={config.model.factory!r} is not callable")
        model = as_backbone(factory(config))
        if input_shape is None:
            info = dataset_info(config.data.dataset)
            return model, (info.channels, info.height, info.width), info.num_classes
        return model, input_shape, None
    if config.is_diffusion:
        return _denoiser_for(config)
    info = dataset_info(config.data.dataset)
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


def _denoiser_for(config: RunConfig) -> tuple[Backbone, tuple[int, ...], int | None]:
    """A denoiser for the run's x₀ (2-D points or images), conditioned on its classes if any."""
    shape, classes = data_shape(config)
    model = build_model(
        config.model.name,
        in_channels=shape[0],
        image_size=shape[1] if len(shape) == 3 else 1,
        num_classes=classes or 0,
        hidden=config.model.hidden,
        depth=config.model.depth,
    )
    return model, shape, classes


def probe_cond(config: RunConfig, batch: int, dtype: torch.dtype) -> torch.Tensor | None:
    """A conditioning batch to probe a denoiser with (time 0, the null label); None otherwise."""
    return torch.zeros(batch, 2, dtype=dtype) if config.is_diffusion else None


def choose_bounds(config: RunConfig, model: Backbone, input_shape: tuple[int, ...]) -> tuple[int, ...]:
    """Cut points for the configured balance (``time`` profiles one batch on this machine).

    A run that has been checkpointed keeps its cut: resuming it re-uses the checkpoint's cut
    points rather than profiling again (a timed cut can come out differently)."""
    saved = checkpointed_bounds(config)
    if saved is not None:
        return saved
    dtype = next((p.dtype for p in model.parameters()), torch.float32)
    sample = torch.randn(min(config.train.batch_size, 64), *input_shape, dtype=dtype)
    cond = probe_cond(config, len(sample), dtype)
    part = split(model, config.parallel.stages, config.parallel.balance, sample=sample, cond=cond)
    return part.bounds


def checkpointed_bounds(config: RunConfig) -> tuple[int, ...] | None:
    """The cut points of the run's newest complete checkpoint set, if it has one."""
    checkpoint = latest_set(run_dir_for(config) / "checkpoint")
    if checkpoint is None:
        return None
    bounds = checkpoint.manifest.get("identity", {}).get("partition.bounds")
    if not bounds or len(bounds) != config.parallel.stages + 1:
        return None  # another layout: check_resumable names the difference
    return tuple(bounds)


def distributed_bounds(
    config: RunConfig, comm: Comm, model: nn.Module | None = None, input_shape: tuple[int, ...] | None = None
) -> tuple[int, ...]:
    """Cut points chosen by rank 0 and broadcast, so every rank cuts the model the same way."""
    bounds = None
    if comm.rank == 0:
        if model is None:
            built, input_shape, _ = build_model_for(config, input_shape)
            model = built
        assert input_shape is not None
        bounds = choose_bounds(config, as_backbone(model), input_shape)
    return tuple(comm.broadcast_object(bounds, src=0))


def build_setup(
    config: RunConfig,
    device: torch.device | None = None,
    bounds: tuple[int, ...] | None = None,
    *,
    model: nn.Module | None = None,
    input_shape: tuple[int, ...] | None = None,
    objective: Objective | None = None,
) -> Setup:
    """Everything a run's workers share.  Pass ``bounds`` chosen once (e.g. by rank 0), and a
    user's own ``model`` (with the ``input_shape`` of one sample) to train it instead of the
    config's."""
    check_config(config)
    method = method_class(config)
    device = device or torch.device("cpu")
    dtype = torch_dtype(config.train.dtype)
    if model is None:
        backbone, input_shape, num_classes = build_model_for(config, input_shape)
    else:
        if input_shape is None:
            raise ConfigError("build_setup(model=...) needs input_shape, the shape of one input sample")
        backbone, num_classes = as_backbone(copy.deepcopy(model)), None
    backbone.to(dtype=dtype)
    if bounds is None:
        bounds = choose_bounds(config, backbone, input_shape)
    partition = _partition_at(backbone, bounds)
    shapes = boundary_shapes(
        partition.stages, torch.zeros(2, *input_shape, dtype=dtype), probe_cond(config, 2, dtype)
    )
    aux = _build_aux(config, method, input_shape, shapes, num_classes) if method.needs_aux else None
    if aux is not None:
        aux.to(device=device, dtype=dtype)
    backbone.to(device=device)
    layout = Layout(config.parallel.stages, config.parallel.replicas)
    return Setup(
        config,
        input_shape,
        num_classes,
        backbone,
        partition,
        shapes,
        aux,
        layout,
        device,
        dtype,
        method,
        objective or Objective(),
    )


def _build_aux(
    config: RunConfig,
    method: type[Method],
    input_shape: tuple[int, ...],
    shapes: list[tuple[int, ...]],
    num_classes: int | None,
) -> AuxNet | None:
    if config.parallel.stages == 1:
        return None
    torch.manual_seed(config.train.seed + 1)
    if config.is_diffusion:
        return _denoiser_aux(config, method, input_shape, shapes, num_classes)
    if config.aux.label_conditioned_multipliers and num_classes is None:
        raise ConfigError("aux.label_conditioned_multipliers needs a classification dataset (class labels)")
    return build_auxnet(
        input_shape,
        shapes,
        width=config.aux.width,
        blocks_per_stage=config.aux.blocks_per_stage,
        multiplier_heads=config.aux.multiplier_heads and method.aux_multipliers,
        label_classes=num_classes if config.aux.label_conditioned_multipliers else None,
        stem_stride=config.aux.stem_stride,
    )


def _denoiser_aux(
    config: RunConfig,
    method: type[Method],
    input_shape: tuple[int, ...],
    shapes: list[tuple[int, ...]],
    num_classes: int | None,
) -> AuxNet:
    heads = 4 if config.aux.width % 4 == 0 else 1
    try:
        return build_conditional_auxnet(
            input_shape,
            shapes,
            num_classes=num_classes,
            width=config.aux.width,
            multiplier_heads=config.aux.multiplier_heads and method.aux_multipliers,
            heads=heads,
        )
    except ValueError as error:
        raise ConfigError(f"aux: {error}") from None


def _partition_at(model: Backbone, bounds: tuple[int, ...]) -> Partition:
    stages = tuple(model.slice(a, b) for a, b in zip(bounds, bounds[1:], strict=False))
    return Partition(stages=stages, bounds=tuple(bounds), block_costs=tuple([1.0] * len(model)))


def make_worker(
    setup: Setup,
    rank: int,
    comm: Comm,
    total_steps: int,
    *,
    own_copy: bool,
    oracle: Oracle | None = None,
    oracle_parts: frozenset[str] = ORACLE_PARTS["both"],
) -> StageWorker:
    """The worker of ``rank``.  ``own_copy`` gives it private module/AuxNet objects (needed when
    several workers live in one process and must not share parameters)."""
    stage = setup.layout.stage_of(rank)
    replica = setup.layout.replica_of(rank)
    module: nn.Module = setup.partition.stages[stage]
    aux = setup.aux
    if own_copy:
        module = module if replica == 0 else copy.deepcopy(module)
        if replica == 0 and stage > 0 and isinstance(module, Backbone):
            # A denoiser's modules share one embedder object in the model; each worker needs
            # its own replica (module 0 keeps the model's, so the model trains in place).
            module = module.with_own_embedder()
        aux = copy.deepcopy(aux)
    return StageWorker(
        setup.config,
        setup.layout,
        stage,
        replica,
        module,
        setup.boundary_shapes,
        comm,
        total_steps,
        method=setup.method,
        objective=setup.objective,
        device=setup.device,
        dtype=setup.dtype,
        aux=aux,
        oracle=oracle,
        oracle_parts=oracle_parts,
    )
