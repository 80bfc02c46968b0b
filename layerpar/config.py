"""Run configuration: frozen dataclasses are the schema, YAML files are only data.

Values are applied in one documented order: the dataclass defaults, then the YAML file, then
each ``--set section.key=value`` override.  An unknown key fails and names the valid ones.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from layerpar.config_checks import DENOISER_MODELS, check_run_config
from layerpar.config_io import apply_override, from_dict, load_yaml
from layerpar.errors import ConfigError

__all__ = [
    "DENOISER_MODELS",
    "RunConfig",
    "apply_override",
    "from_dict",
    "load_config",
    "load_yaml",
    "replace",
]


Balance = Literal["blocks", "params", "time"]


@dataclass(frozen=True, kw_only=True, slots=True)
class ModelConfig:
    """Which backbone to train."""

    name: str = "resnet20"
    """Backbone: resnet20/32/44/56/110, wrn16-K / wrn28-K (K = widen factor), mlp; diffusion
    denoisers (with a ``diffusion`` objective): mlp_denoiser (2-D data), dit_tiny, dit_s, dit
    (hidden/depth below)."""
    width: int = 1
    """Width multiplier for ResNets (base channels 16 × width)."""
    hidden: int = 128
    """Hidden width of the residual MLPs (``mlp``, ``mlp_denoiser``) and of a custom ``dit``."""
    depth: int = 8
    """Residual blocks of the residual MLPs, DiT blocks of a custom ``dit``."""
    factory: str | None = None
    """Your own model: ``package.module:function`` returning an ``nn.Sequential`` of blocks (or a
    layerpar Backbone), called as ``function(config)`` with the torch seed set from train.seed.
    Every worker process imports and calls it, so it runs under every launcher.  ``name`` is
    then only a label."""


@dataclass(frozen=True, kw_only=True, slots=True)
class DataConfig:
    """Which data to train on and how to augment it."""

    dataset: str = "fashion_mnist"
    """mnist, fashion_mnist or digits (sklearn, 8×8, for quick tests); 2-D toy distributions for
    diffusion: checkerboard, gaussians8 (generated, seeded)."""
    train_limit: int | None = None
    """Use only the first N training images (None: all)."""
    test_limit: int | None = None
    """Evaluate on only the first N test images (None: the full test set)."""
    crop_pad: int = 2
    """Random-crop padding in pixels (0 disables cropping)."""
    flip: bool = False
    """Random horizontal flips (off for digits, where a flip changes meaning)."""
    cache_dir: str | None = None
    """Data cache (default: $LAYERPAR_DATA or ~/.cache/layerpar/data)."""
    factory: str | None = None
    """Your own data: ``package.module:function`` returning ``(train, test)``, each a
    ``layerpar.ArrayDataset``, a ``(inputs, targets)`` pair of tensors or a map-style torch
    Dataset of ``(input, target)`` pairs; called as ``function(config)`` in every worker.
    ``dataset`` is then only a label."""


@dataclass(frozen=True, kw_only=True, slots=True)
class OptimConfig:
    """Optimiser of the main network (each module keeps its own copy)."""

    name: Literal["sgd", "adamw"] = "sgd"
    """SGD with momentum (classifiers), or AdamW (diffusion denoisers; betas 0.9, 0.999).
    Both are per-parameter, so splitting the parameters across modules is the serial update."""
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = True
    schedule: Literal["cosine", "constant"] = "cosine"
    """Learning-rate schedule over all training steps."""


@dataclass(frozen=True, kw_only=True, slots=True)
class AuxConfig:
    """The auxiliary network that predicts every module's input (and multiplier)."""

    width: int = 8
    """Channels (or hidden units) of the AuxNet trunk."""
    blocks_per_stage: int = 1
    """Narrow residual blocks per module in the AuxNet trunk."""
    lr: float = 1e-3
    """Adam learning rate of the AuxNet."""
    multiplier_heads: bool = True
    """Predict the multipliers m_k (augmented Lagrangian); ignored by the penalty method."""
    stem_stride: int = 1
    """Stride of the AuxNet's stem (2: the trunk runs at half resolution, about 4× cheaper;
    predictions are upsampled to each boundary)."""
    label_conditioned_multipliers: bool = False
    """Let the multiplier heads see the labels (the true adjoint depends on them)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class LayerParConfig:
    """Local losses and their schedules (DESIGN.md §2)."""

    method: str = "pipelined"
    """pipelined (the default, the only method that reached serial accuracy in docs/parity.md:
    module k works on the true h_{k−1} one step late and updates with the true adjoint
    2(K−1−k) micro-batches late, weights stashed; no AuxNet in the
    parallel steps), penalty (m ≡ 0), al (augmented Lagrangian, multipliers predicted by the
    AuxNet), delayed (AuxNet inputs, multipliers = the next module's true adjoints of the same
    batch, applied K−1−k steps late), corrected (pipelined, plus a local head per boundary
    whose gradient predicts the adjoint at once, corrected when the true adjoint arrives) or local
    (pipelined, plus each head's local cross-entropy kept: deep supervision).  One file each under
    layerpar/parallel/methods/; the registry there lists them."""
    beta: float = 0.01
    """Penalty weight β of (β/2)||h − a||², summed over a sample's features."""
    beta_final: float | None = None
    """If set, β grows geometrically from ``beta`` to this value over the parallel steps."""
    gamma: float = 1.0
    """Weight γ of the multiplier-head loss in the AuxNet objective."""
    warmup_epochs: float | None = None
    """Epochs of serial backprop first, distilling the AuxNet meanwhile (counted in time).
    null: the method's default (0 for pipelined, 1 for the AuxNet methods), resolved when the
    run starts, so ``--set`` and ``replace`` of the method work in any order."""
    serial_final_epochs: float | None = None
    """Serial-parallel hybrid: the last epochs in ordinary serial backprop.  null: the method's
    default (0 for pipelined, 0.5 for the AuxNet methods)."""
    serial_every: int = 0
    """Periodic serial steps: every n-th step of the layer-parallel phase is serial backprop
    (0: none).  Costs a serial step's time each; see docs/parity.md."""
    predict_weights: bool = False
    """Pipelined method: forward on the weights SGD's momentum predicts for the step the
    gradient will be applied at, θ − D·lr·b (D = the module's delay); see docs/parity.md."""
    accumulate: int | None = None
    """Pipelined method: micro-batches per optimiser step.  Each step's batch of
    train.batch_size samples (the same samples serial backprop takes in one step) is fed through
    the pipeline in this many parts and their gradients are summed, so every gradient is at most
    ceil(2(K−1)/accumulate) weight versions old.  null: the smallest power of two ≥ 2(K−1), at
    most one version (the double-buffered weights of PipeDream-2BW); see docs/parity.md."""
    compensate_momentum: bool = False
    """Pipelined method: lower the SGD momentum of module k to 1 − (1−μ)(1+D_k), since its
    delay D_k already acts as momentum; see parallel/methods/pipelined.py."""
    predictor: str = "linear"
    """Method corrected: how a boundary's head predicts the adjoint.  linear: Gᵀ(p̂ − onehot(y)),
    p̂ the head's softmax and G the least-squares fit of the arriving adjoints (the later modules'
    mean Jacobian); gradient: ∇_h CE(head(h), y).  See auxnet/adjoint_head.py."""
    predictor_scale: float | None = None
    """Method corrected: the scale c of the adjoint prediction c·m̂.  null:
    calibrated against the true adjoints as they arrive (least squares, floored at 0); 0: no
    prediction (the pipelined method exactly).  Method local: the weight α of the local loss
    (null: 1)."""
    correct: bool = True
    """Method corrected: subtract each applied prediction when the true adjoint arrives, so the
    two parts sum to the exact delayed gradient.  false: the prediction stays (a local
    classifier term, deep supervision of every boundary)."""
    head_term: str = "forward"
    """With ``correct: false`` (method local): when a module applies its kept local term Jᵀ(α m̂).
    forward: at the micro-batch's forward (a second backward of the module per micro-batch);
    delayed: added to the true adjoint when it arrives (one backward of v + α m̂, the term as
    stale as the adjoint).  See parallel/methods/corrected.py."""
    al_step_clip: float | None = None
    """Clip each element of the AL step (m − v)/β to ±this value (None: no clip)."""
    bn_reestimate_batches: int = 20
    """Serial forward passes that re-estimate BatchNorm statistics before evaluation."""
    oracle: str | None = None
    """Ablation instrument of the AuxNet methods (docs/parity.md, "Oracle ablations"): give the
    modules the true ``multipliers`` (adjoints), the true ``states`` (inputs and anchors), or
    ``both`` from a serial pass at the current weights, while the AuxNet trains on its own
    prediction.  null: off.  One process only (the in-process trainer): the serial pass needs
    every module's weights."""


@dataclass(frozen=True, kw_only=True, slots=True)
class ParallelConfig:
    """How the backbone is split and where the modules run."""

    stages: int = 2
    """K: number of modules, one per device."""
    replicas: int = 1
    """Data-parallel replicas of every module (stages × replicas = world size)."""
    balance: Balance = "time"
    """Cut the backbone by equal block counts, parameter counts or measured time."""
    backend: Literal["auto", "gloo", "nccl"] = "auto"
    """torch.distributed backend: auto = nccl with CUDA, gloo otherwise."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads_per_worker: int = 1
    """torch threads per worker process (a CPU 'device' is one core)."""
    timeout_s: float = 120.0
    """Process-group timeout; a rendezvous whose peer died fails after this."""


@dataclass(frozen=True, kw_only=True, slots=True)
class TrainConfig:
    """What to train, for how long, and where results go."""

    mode: Literal["serial", "layerpar"] = "layerpar"
    epochs: float = 3.0
    batch_size: int = 128
    seed: int = 0
    dtype: Literal["float32", "float64"] = "float32"
    """Dtype of the weights (the master copy) and of the data."""
    precision: Literal["fp32", "bf16"] = "fp32"
    """Compute precision: bf16 runs every module's forward under torch.autocast (weights stay
    in train.dtype, float32) and sends activations and gradients between modules in bf16."""
    loss: str | None = None
    """Your own task loss: ``package.module:function`` with ``function(output, target)`` -> the
    batch-mean loss (null: cross-entropy).  With your own loss, evaluation reports the test
    loss, and the test accuracy only when the targets are class indices."""
    log_every: int = 10
    """Metrics are kept as tensors and read back to the host (one sync) every N steps."""
    eval_every: int = 1
    """Evaluate every N epochs (and always at the end)."""
    eval_every_steps: int | None = None
    """Also evaluate every N steps (batches; finer accuracy-versus-time curves; evaluation is
    untimed)."""
    out_dir: str = "runs"
    """Each run writes metrics.jsonl, summary.json, model.pt and checkpoint/ under out_dir/run_name."""
    run_name: str | None = None
    progress: bool = True
    stop_at_step: int | None = None
    """Stop after this many steps (batches, of the full schedule) and checkpoint; ``--resume``
    goes on exactly where it stopped (micro-batches in flight are part of the checkpoint)."""
    check_finite_every: int = 1
    """Stop the run when a module's loss or gradients are NaN/Inf, checked every N steps
    (one host read-back per check; 0: never)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class CheckpointConfig:
    """Periodic checkpoint sets under run_dir/checkpoint/ (every worker's shard + a manifest)."""

    every_steps: int | None = None
    """Save a set every N steps (batches)."""
    every_min: float | None = 10.0
    """Save a set when this many minutes have passed since the last one (null: off)."""
    keep: int = 2
    """Complete sets kept (older ones are deleted once a newer one is complete)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class DiffusionConfig:
    """Train a denoiser instead of a classifier (``objective`` other than none)."""

    objective: Literal["none", "ddpm", "flow"] = "none"
    """ddpm: ε-prediction on a noise schedule; flow: flow-matching velocity (x_t = (1−t)x₀ + tε,
    target ε − x₀); none: a classifier."""
    schedule: Literal["linear", "cosine"] = "linear"
    """DDPM noise schedule."""
    timesteps: int = 1000
    """DDPM diffusion steps T (t is drawn uniformly from 0..T−1 per sample)."""
    label_dropout: float = 0.1
    """Probability that a sample's label is replaced by the null label (classifier-free
    guidance); every worker draws the same from the step seed."""
    conditional: bool = True
    """Condition on the class label (image data sets; 2-D toy data are unconditional)."""
    ema_decay: float | None = 0.999
    """EMA of every module's weights (warm-up min(decay, (1+n)/(10+n)) over optimiser steps n);
    samples are drawn from the EMA weights.  null: no EMA."""
    sampler: Literal["auto", "ddim", "ddpm", "euler"] = "auto"
    """Sampler of ``layerpar sample``: auto = ddim for ddpm, euler for flow."""
    sample_steps: int = 100
    """Denoising steps of the DDIM / Euler sampler (DDPM takes all T)."""
    guidance: float = 2.0
    """Classifier-free guidance scale of ``layerpar sample`` (1: none)."""
    eval_samples: int = 2000
    """Test samples whose fixed (x₀, t, ε) draws give the held-out denoising loss."""


@dataclass(frozen=True, kw_only=True, slots=True)
class RunConfig:
    """Everything one training run needs; the YAML file mirrors these sections."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    aux: AuxConfig = field(default_factory=AuxConfig)
    layerpar: LayerParConfig = field(default_factory=LayerParConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)

    @property
    def is_diffusion(self) -> bool:
        return self.diffusion.objective != "none"

    def __post_init__(self) -> None:
        check_run_config(self)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """Defaults, then the YAML file at ``path``, then each ``section.key=value`` override."""
    data: dict[str, Any] = load_yaml(path) if path is not None else {}
    for assignment in overrides:
        apply_override(data, assignment)
    return from_dict(RunConfig, data, "")


def replace(config: RunConfig, **sections: dict[str, Any]) -> RunConfig:
    """A copy of ``config`` with some section fields changed, e.g. replace(c, train={"epochs": 1})."""
    data = config.to_dict()
    for section, values in sections.items():
        if section not in data:
            raise ConfigError(f"unknown section {section!r}; valid: {', '.join(data)}")
        data[section].update(values)
    return from_dict(RunConfig, data, "")
