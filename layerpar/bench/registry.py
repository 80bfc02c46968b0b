"""The benchmark arms: one ``ArmSpec`` each, in ``ARMS``, the only list of them.

Everything else reads it: the harness (devices and processes per arm, which arms take
``--microbatches``), ``layerpar bench --arms`` (validation and help text), the scaling model
(``predict.predict`` and ``--predict``) and ``--train`` (``accuracy.train_arm``).

Every arm runs its per-rank function in K worker processes on the CPU, one thread each, joined
by gloo (``harness.run_arm``); GPU timing is ``layerpar bench --one-device --device cuda``.

Adding an arm:

1. write its per-rank function, ``(config, warmup, steps, *, microbatches, **_) -> (step
   seconds, bytes sent per step)``, in an arm module (``arms.py``, or a file of its own such as
   ``deepspeed_arm.py``); time it with ``common.time_steps`` so that bytes are counted;
2. add a two-line ``run`` hook that imports that function to ``arm_hooks.py``, and an ``ArmSpec``
   to ``ARMS`` below;
   optionally a ``predict`` hook into ``costmodel.py``.

The hooks import their modules when called: reading the registry (``layerpar --help``) imports
no torch, and no arm module imports this one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Literal

from layerpar.bench import arm_hooks as hooks
from layerpar.bench.arm_hooks import PredictFn, RunFn
from layerpar.errors import ConfigError

if TYPE_CHECKING:
    from layerpar.config import RunConfig


@dataclass(frozen=True)
class ArmSpec:
    """One benchmark arm: how it runs, how it is predicted, whether ``--train`` trains it."""

    name: str
    description: str
    """One line for ``layerpar bench --help``."""
    run: RunFn
    devices: Literal["one", "stages"] = "stages"
    """``one``: once, on one device, whatever ``--stages`` says (the serial baseline);
    ``stages``: once per K of ``--stages``, on K devices."""
    one_process: bool = False
    """All K devices in one process (K threads; informational) instead of one process each."""
    microbatches: bool = False
    """Takes ``--microbatches M``: M is reported with its rows, and it is a pipeline arm in the
    "speedup vs best pipeline" column and in the cost model's M sweep."""
    min_microbatches_per_device: int = 1
    """The schedule runs only with M ≥ this × K (DualPipeV: 2, one per stage); smaller M of a
    ``--microbatches`` sweep are skipped and said so in table.md."""
    predict: PredictFn | None = None
    """Its formula in the scaling model (``costmodel.py``); None: ``--predict`` skips it."""
    splits_model: bool = True
    """The arm cuts the backbone into K stages (False: K data-parallel replicas of all of it)."""
    denoisers: bool = True
    """It runs a diffusion denoiser (``config.is_diffusion``: ``model(x_t, cond)``, MSE)."""
    measures_contention: bool = False
    """An informational probe, not a training method: K serial copies at once, whose step over
    serial's is the machine's contention (``validate.run_clock``); kept out of speedup plots."""
    train_mode: Literal["serial", "layerpar"] | None = None
    """``--train`` trains it to the end with this ``train.mode`` (None: step time only; the
    exact-gradient arms reach serial's accuracy by construction)."""
    method: str | None = None
    """It runs ``layerpar.method`` = this instead of the config's (a second layer-parallel
    method beside the ``layerpar`` arm in one invocation)."""
    layerpar: tuple[tuple[str, object], ...] = ()
    """More ``layerpar`` settings of its method, as (key, value) pairs."""

    def configured(self, config: RunConfig) -> RunConfig:
        """``config`` as this arm runs it."""
        if self.method is None:
            return config
        from layerpar.config import replace

        return replace(config, layerpar={"method": self.method, **dict(self.layerpar)})

    def device_counts(self, stages: Sequence[int]) -> list[int]:
        """The devices of each of its runs, given ``--stages``."""
        return [1] if self.devices == "one" else list(stages)

    def processes(self, devices: int) -> int:
        """Worker processes of a run on ``devices`` devices."""
        return 1 if self.one_process else devices


# --------------------------------------------------------------------------------------------
# The registry

SERIAL = "serial"
"""The baseline arm: speedups are against it, and ``--train``'s default target is its accuracy."""

LAYERPAR = "layerpar"
"""The layer-parallel arm (``--one-device`` measures its stages in turn)."""

CORRECTED = "layerpar-corrected"
"""Layer-parallel with the predict-then-correct method, beside the config's (issue 11)."""

LOCAL = "layerpar-local"
"""Layer-parallel with the local-heads method, beside the config's (issue 11)."""

LOCAL_DELAYED = "layerpar-local-delayed"
"""The local-heads method with its head term applied with the delayed adjoint (one backward)."""

_SPECS = (
    ArmSpec(
        SERIAL,
        "serial backprop on one device",
        hooks.run_serial,
        devices="one",
        predict=hooks.predict_serial,
        train_mode="serial",
    ),
    ArmSpec(
        LAYERPAR,
        "layer-parallel training (layerpar.method of the config), K stage workers",
        hooks.run_layerpar,
        predict=hooks.predict_layerpar,
        train_mode="layerpar",
    ),
    ArmSpec(
        CORRECTED,
        "layer-parallel, layerpar.method=corrected (heads predict each boundary's adjoint), K workers",
        hooks.run_with_method("corrected"),
        train_mode="layerpar",
        denoisers=False,
        method="corrected",
    ),
    ArmSpec(
        LOCAL,
        "layer-parallel, layerpar.method=local (local classifier heads kept: deep supervision), K workers",
        hooks.run_with_method("local"),
        train_mode="layerpar",
        denoisers=False,
        method="local",
    ),
    ArmSpec(
        LOCAL_DELAYED,
        "layer-parallel, layerpar.method=local, head_term=delayed (the heads' term rides on the "
        "delayed backward), K workers",
        hooks.run_with_method("local", head_term="delayed"),
        train_mode="layerpar",
        denoisers=False,
        method="local",
        layerpar=(("head_term", "delayed"),),
    ),
    ArmSpec(
        "ddp",
        "DistributedDataParallel over K devices (a communication hook counts its bytes)",
        hooks.run_ddp,
        predict=hooks.predict_ddp,
        splits_model=False,
    ),
    ArmSpec(
        "gpipe",
        "GPipe, torch.distributed.pipelining, M micro-batches",
        hooks.run_gpipe,
        microbatches=True,
        predict=hooks.predict_gpipe,
    ),
    ArmSpec(
        "1f1b",
        "1F1B, torch.distributed.pipelining, M micro-batches",
        hooks.run_1f1b,
        microbatches=True,
        predict=hooks.predict_1f1b,
    ),
    ArmSpec(
        "interleaved1f1b",
        "interleaved 1F1B, torch.distributed.pipelining, 2 stages per rank, M micro-batches",
        hooks.multistage("interleaved1f1b"),
        microbatches=True,
        predict=hooks.predict_multistage("interleaved1f1b"),
    ),
    ArmSpec(
        "interleavedzb",
        "interleaved zero-bubble, torch.distributed.pipelining, 2 stages per rank, M micro-batches",
        hooks.multistage("interleavedzb"),
        microbatches=True,
        predict=hooks.predict_multistage("interleavedzb"),
        denoisers=False,
    ),
    ArmSpec(
        "zbv",
        "ZBV zero-bubble (V-shaped), torch.distributed.pipelining, M micro-batches",
        hooks.multistage("zbv"),
        microbatches=True,
        predict=hooks.predict_multistage("zbv"),
        denoisers=False,
    ),
    ArmSpec(
        "dualpipev",
        "DualPipeV (V-shaped), torch.distributed.pipelining, M ≥ 2K micro-batches",
        hooks.multistage("dualpipev"),
        microbatches=True,
        predict=hooks.predict_multistage("dualpipev"),
        denoisers=False,
        min_microbatches_per_device=2,
    ),
    ArmSpec(
        "deepspeed",
        "DeepSpeed PipelineModule, M micro-batches (optional: needs deepspeed)",
        hooks.run_deepspeed,
        microbatches=True,
        denoisers=False,
    ),
    ArmSpec(
        "serial-threads",
        "informational: serial backprop in one process on K threads",
        hooks.run_serial_threads,
        one_process=True,
    ),
    ArmSpec(
        "contention",
        "informational: K copies of serial backprop at once, one process each, no communication "
        "(its step over serial's is the contention --predict corrects for)",
        hooks.run_contention,
        splits_model=False,
        predict=hooks.predict_contention,
        measures_contention=True,
    ),
    ArmSpec(
        "layerpar-minimal",
        "the penalty/AL layerpar step as a plain torch.distributed loop (framework overhead)",
        hooks.run_layerpar_minimal,
    ),
)

ARMS: Mapping[str, ArmSpec] = MappingProxyType({spec.name: spec for spec in _SPECS})
"""Every benchmark arm by name, in ``--help`` order."""
if len(ARMS) != len(_SPECS):
    raise RuntimeError("two ArmSpecs in layerpar/bench/registry.py share a name")


def names() -> tuple[str, ...]:
    """Every arm's name, in registry order."""
    return tuple(ARMS)


def predictable() -> tuple[str, ...]:
    """The arms the scaling model predicts."""
    return tuple(name for name, spec in ARMS.items() if spec.predict is not None)


def get(name: str) -> ArmSpec:
    """The arm called ``name``; an unknown name is a ``ConfigError`` listing the valid ones."""
    check(name)
    return ARMS[name]


def check(arms: str | Iterable[str]) -> None:
    """Raise ``ConfigError`` naming every arm of ``arms`` not in the registry, and the valid ones."""
    unknown = [a for a in ([arms] if isinstance(arms, str) else arms) if a not in ARMS]
    if unknown:
        label = "arm" if len(unknown) == 1 else "arms"
        raise ConfigError(f"unknown {label} {', '.join(map(repr, unknown))}; valid: {', '.join(ARMS)}")


def check_denoiser(arms: Iterable[str], config: RunConfig) -> None:
    """For a denoiser config, raise ``ConfigError`` naming the arms of ``arms`` that cannot run
    one, and the arms that can (checked before any process starts)."""
    if not config.is_diffusion:
        return
    refused = [a for a in arms if not get(a).denoisers]
    if refused:
        able = [name for name, spec in ARMS.items() if spec.denoisers]
        label = "arm {} does" if len(refused) == 1 else "arms {} do"
        raise ConfigError(
            f"{label.format(', '.join(map(repr, refused)))} not run diffusion denoisers yet "
            f"(model {config.model.name!r}); arms that do: {', '.join(able)}"
        )


def parse_arms(text: str) -> tuple[str, ...]:
    """A ``--arms`` comma list, checked against the registry."""
    arms = tuple(a.strip() for a in text.split(",") if a.strip())
    if not arms:
        raise ConfigError(f"--arms is empty; valid arms: {', '.join(ARMS)}")
    check(arms)
    return arms


def help_text() -> str:
    """The ``--arms`` help: every arm with its one-line description."""
    listing = "; ".join(f"{name}: {spec.description}" for name, spec in ARMS.items())
    return f"comma list from {','.join(ARMS)} ({listing})"
