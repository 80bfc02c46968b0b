"""Run configuration: frozen dataclasses are the schema, YAML files are only data.

Values are applied in one documented order: the dataclass defaults, then the YAML file, then
each ``--set section.key=value`` override.  An unknown key fails and names the valid ones.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

import yaml

from layerpar.errors import ConfigError

Method = Literal["penalty", "al", "delayed", "pipelined"]
Balance = Literal["blocks", "params", "time"]


@dataclass(frozen=True, kw_only=True, slots=True)
class ModelConfig:
    """Which backbone to train."""

    name: str = "resnet20"
    """Backbone: resnet20/32/44/56/110, wrn16-K / wrn28-K (K = widen factor), mlp."""
    width: int = 1
    """Width multiplier for ResNets (base channels 16 × width)."""
    hidden: int = 128
    """Hidden width for the residual MLP backbone (``name: mlp``)."""
    depth: int = 8
    """Number of residual blocks for the residual MLP backbone."""


@dataclass(frozen=True, kw_only=True, slots=True)
class DataConfig:
    """Which data to train on and how to augment it."""

    dataset: str = "fashion_mnist"
    """mnist, fashion_mnist or digits (sklearn, 8×8, for quick tests)."""
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


@dataclass(frozen=True, kw_only=True, slots=True)
class OptimConfig:
    """Optimiser of the main network (each module keeps its own copy)."""

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

    method: Method = "pipelined"
    """pipelined (the default, the only method that reached serial accuracy in docs/parity.md:
    module k works on the true h_{k−1} one step late and updates with the true adjoint
    2(K−1−k) micro-batches late, weights stashed: parallel/pipelined.py; no AuxNet in the
    parallel steps), penalty (m ≡ 0), al (augmented Lagrangian, multipliers predicted by the
    AuxNet) or delayed (AuxNet inputs, multipliers = the next module's true adjoints of the same
    batch, applied K−1−k steps late: parallel/delayed.py)."""
    beta: float = 0.01
    """Penalty weight β of (β/2)||h − a||², summed over a sample's features."""
    beta_final: float | None = None
    """If set, β grows geometrically from ``beta`` to this value over the parallel steps."""
    gamma: float = 1.0
    """Weight γ of the multiplier-head loss in the AuxNet objective."""
    warmup_epochs: float | None = None
    """Epochs of serial backprop first, distilling the AuxNet meanwhile (counted in time).
    null: 0 for the pipelined method (it needs no AuxNet), 1 for the others."""
    serial_final_epochs: float | None = None
    """Serial-parallel hybrid: the last epochs in ordinary serial backprop.  null: 0 for the
    pipelined method, 0.5 for the others."""
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
    delay D_k already acts as momentum; see parallel/pipelined.py."""
    al_step_clip: float | None = None
    """Clip each element of the AL step (m − v)/β to ±this value (None: no clip)."""
    bn_reestimate_batches: int = 20
    """Serial forward passes that re-estimate BatchNorm statistics before evaluation."""

    def __post_init__(self) -> None:
        # Fill the method-dependent defaults, so everything downstream sees plain numbers.
        pipelined = self.method == "pipelined"
        if self.warmup_epochs is None:
            object.__setattr__(self, "warmup_epochs", 0.0 if pipelined else 1.0)
        if self.serial_final_epochs is None:
            object.__setattr__(self, "serial_final_epochs", 0.0 if pipelined else 0.5)


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
    eval_every: int = 1
    """Evaluate every N epochs (and always at the end)."""
    eval_every_steps: int | None = None
    """Also evaluate every N steps (batches; finer accuracy-versus-time curves; evaluation is
    untimed)."""
    out_dir: str = "runs"
    """Each run writes metrics.jsonl, summary.json and checkpoint.pt under out_dir/run_name."""
    run_name: str | None = None
    progress: bool = True
    stop_at_step: int | None = None
    """Stop after this many steps (batches, of the full schedule) and checkpoint; ``--resume``
    goes on (the pipelined method drains its pipeline at the stop, so its resumed run is not
    bit-identical to an uninterrupted one)."""


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

    def __post_init__(self) -> None:
        _check_positive("parallel.stages", self.parallel.stages)
        _check_positive("parallel.replicas", self.parallel.replicas)
        _check_positive("train.batch_size", self.train.batch_size)
        if self.layerpar.beta <= 0:
            raise ConfigError(f"layerpar.beta must be > 0, got {self.layerpar.beta}")
        if self.layerpar.serial_every < 0 or self.layerpar.serial_every == 1:
            raise ConfigError(
                f"layerpar.serial_every must be 0 (off) or >= 2 (1 would make every step serial: use "
                f"train.mode=serial), got {self.layerpar.serial_every}"
            )
        if self.layerpar.method == "pipelined" and self.layerpar.serial_every:
            raise ConfigError(
                "layerpar.method=pipelined keeps K−1 batches in flight, and every serial step drains "
                f"the pipeline: set layerpar.serial_every=0 (got {self.layerpar.serial_every})"
            )
        if self.layerpar.beta_final is not None and self.layerpar.beta_final <= 0:
            raise ConfigError(
                f"layerpar.beta_final must be > 0 (or null for a constant beta), got {self.layerpar.beta_final}"
            )
        if self.train.batch_size % self.parallel.replicas:
            raise ConfigError(
                f"train.batch_size={self.train.batch_size} is not divisible by "
                f"parallel.replicas={self.parallel.replicas}: every replica needs an equal shard"
            )
        self._check_accumulation()

    def _check_accumulation(self) -> None:
        lp = self.layerpar
        if lp.accumulate is not None:
            _check_positive("layerpar.accumulate", lp.accumulate)
            if lp.accumulate > 1 and lp.method != "pipelined":
                raise ConfigError(
                    f"layerpar.accumulate={lp.accumulate} is for layerpar.method=pipelined (got "
                    f"{lp.method}): leave it null"
                )
        micro = self.micro_batches
        if micro > 1 and (lp.warmup_epochs or lp.serial_final_epochs):
            raise ConfigError(
                f"layerpar.method=pipelined with {micro} micro-batches per step runs no serial phases: "
                f"set layerpar.warmup_epochs=0 and layerpar.serial_final_epochs=0 (got "
                f"{lp.warmup_epochs} and {lp.serial_final_epochs}), or layerpar.accumulate=1"
            )
        if micro > 1 and self.train.batch_size % (micro * self.parallel.replicas):
            raise ConfigError(
                f"train.batch_size={self.train.batch_size} does not split into {micro} micro-batches "
                f"x {self.parallel.replicas} replicas: use a multiple of {micro * self.parallel.replicas} "
                "or set layerpar.accumulate"
            )
        if micro > 1 and self.train.batch_size // (micro * self.parallel.replicas) < 2:
            raise ConfigError(
                f"train.batch_size={self.train.batch_size} in {micro} micro-batches x {self.parallel.replicas} "
                "replicas leaves 1 sample per micro-batch (BatchNorm needs 2): raise train.batch_size to "
                f"{2 * micro * self.parallel.replicas} or set a smaller layerpar.accumulate"
            )

    @property
    def micro_batches(self) -> int:
        """Parts each step's batch is fed in (pipelined method; 1 otherwise)."""
        lp = self.layerpar
        if lp.method != "pipelined" or self.train.mode == "serial" or self.parallel.stages == 1:
            return 1
        return pipelined_micro_batches(self.parallel.stages, lp.accumulate)

    def loop_steps(self, field_name: str) -> int | None:
        """``train.<field_name>`` (counted in batches, i.e. optimiser steps) in steps of the
        training loop, which are micro-batches for the pipelined method."""
        value = getattr(self.train, field_name)
        return None if value is None else value * self.micro_batches

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def pipelined_micro_batches(stages: int, accumulate: int | None) -> int:
    """Micro-batches per step of the pipelined method: ``accumulate``, or by default the smallest
    power of two ≥ 2(K−1), so no gradient is more than one weight version old."""
    if accumulate is not None:
        return accumulate
    micro = 1
    while micro < 2 * (stages - 1):
        micro *= 2
    return micro


def _check_positive(name: str, value: int) -> None:
    if value < 1:
        raise ConfigError(f"{name} must be >= 1, got {value}")


# --------------------------------------------------------------------------------------------
# Building dataclasses from plain data


def from_dict(cls: type, data: dict[str, Any], where: str = "") -> Any:
    """Build dataclass ``cls`` from ``data``; unknown keys and wrong types raise ConfigError."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {type(data).__name__}")
    hints = get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ConfigError(
            f"unknown key(s) {unknown} in {where or 'config'}; valid keys: {', '.join(names)}"
        )
    kwargs = {key: _coerce(hints[key], value, f"{where}.{key}".lstrip(".")) for key, value in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as error:
        raise ConfigError(f"{where or 'config'}: {error}") from error


def _coerce(hint: Any, value: Any, where: str) -> Any:
    origin = get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, {} if value is None else value, where)
    if origin in (typing.Union, types.UnionType):
        options = get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(option, value, where)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(errors[0] if errors else f"{where}: invalid value {value!r}")
    if origin is Literal:
        allowed = get_args(hint)
        if value not in allowed:
            raise ConfigError(f"{where} must be one of {list(allowed)}, got {value!r}")
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where} must be true or false, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where} must be an integer, got {value!r}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{where} must be a number, got {value!r}")
    if hint is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where} must be a string, got {value!r}")
    return value


def apply_override(data: dict[str, Any], assignment: str) -> None:
    """Apply one ``section.key=value`` override (value parsed as YAML) to nested ``data``."""
    if "=" not in assignment:
        raise ConfigError(f"--set expects section.key=value, got {assignment!r}")
    dotted, raw = assignment.split("=", 1)
    keys = dotted.strip().split(".")
    if len(keys) < 2 or not all(keys):
        raise ConfigError(
            f"--set key must look like section.key (e.g. train.epochs=2), got {dotted!r}"
        )
    node = data
    for key in keys[:-1]:
        if node.get(key) is None:
            node[key] = {}
        node = node[key]
        if not isinstance(node, dict):
            raise ConfigError(f"--set {dotted}: {key!r} is not a section")
    node[keys[-1]] = yaml.safe_load(raw) if raw.strip() else None


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist; presets live in configs/")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{path} is not valid YAML: {error}") from error
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections")
    return data


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
