"""``BenchConfig``: one ``layerpar bench`` invocation, typed, built once from the command line.

The harness, ``--one-device``, ``--predict`` and ``--train`` all read this object; the parser's
defaults come from its fields (``bench/cli.py``).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from layerpar.bench import registry
from layerpar.errors import ConfigError

if TYPE_CHECKING:
    from layerpar.config import RunConfig

LINK_NAMES = ("gloo-loopback", "nvlink", "infiniband")
"""``--link`` choices: the names of ``costmodel.LINKS`` (a unit test keeps them equal; spelled
out here so that building the parser imports no torch)."""

DEVICES = ("auto", "cpu", "cuda")
"""``--device`` choices."""


@dataclass(frozen=True)
class BenchConfig:
    """What to measure and predict, and where the results go (one field per ``bench`` flag)."""

    config: str | None = None
    """Run config YAML (model, data, batch); None: the defaults."""
    overrides: tuple[str, ...] = ()
    """``--set section.key=value`` overrides of the run config."""
    arms: tuple[str, ...] = ("serial", "layerpar")
    """Arms to run, names of ``registry.ARMS``."""
    stages: tuple[int, ...] = (2,)
    """K, the devices of every parallel arm (one run per K)."""
    repeats: int = 3
    """Timed repeats per arm and K (interleaved; the median of the repeat medians is reported)."""
    steps: int = 30
    """Timed steps per repeat, after the warm-up."""
    warmup_steps: int = 5
    pin_cores: bool = False
    """Pin each device of every timed arm to a CPU core of its own (``cores.py``)."""
    microbatches: tuple[int, ...] = (4,)
    """M for the arms that take it (``ArmSpec.microbatches``); several: each pipeline arm runs at
    every M and the best is its headline."""
    train: bool = False
    """Also train the arms with a ``train_mode`` to the end (accuracy, time-to-target)."""
    target: float | None = None
    """Target test accuracy of ``--train`` (None: serial's final accuracy − 0.005)."""
    eval_every_steps: int | None = None
    predict: bool = False
    """Profile this machine and predict every arm with a cost model (``predict_run.run_predict``)."""
    max_stages: int = 64
    replicas: tuple[int, ...] = (1,)
    """Data-parallel replicas to predict."""
    link: str = "gloo-loopback"
    latency: float | None = None
    """Override of the link latency (seconds)."""
    bandwidth: float | None = None
    """Override of the link bandwidth (bytes/s)."""
    one_device: bool = False
    """Measure on one device only (``one_device.py``) instead of running the multi-process arms."""
    device: str = "auto"
    """Device of ``--one-device`` and its ``--predict`` profile (the arms always run on CPU/gloo)."""
    measured: Path | None = None
    """A bench summary.json to validate the predictions against."""
    out: Path = Path("results")
    name: str | None = None
    """Run name; None: derived from config and time."""

    def __post_init__(self) -> None:
        registry.check(self.arms)
        for flag, values in (
            ("--stages", self.stages),
            ("--replicas", self.replicas),
            ("--microbatches", self.microbatches),
        ):
            if not values or min(values) < 1:
                raise ConfigError(f"{flag} needs positive integers, got {list(values)}")
        for flag, value in (
            ("--repeats", self.repeats),
            ("--max-stages", self.max_stages),
        ):
            if value < 1:
                raise ConfigError(f"{flag} must be at least 1, got {value}")
        if self.pin_cores and (self.predict or self.one_device):
            raise ConfigError(
                "--pin-cores pins the timed arms' worker processes, not the one-process profile of "
                "--predict or --one-device, whose model would then be compared with arms timed on other "
                "terms: run the pinned bench and the prediction as two commands"
            )

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> BenchConfig:
        """The config of a parsed ``layerpar bench`` command line (``bench/cli.py``)."""
        return cls(
            config=args.config,
            overrides=tuple(args.overrides),
            arms=registry.parse_arms(args.arms),
            stages=_ints("--stages", args.stages),
            repeats=args.repeats,
            steps=args.steps,
            warmup_steps=args.warmup_steps,
            pin_cores=args.pin_cores,
            microbatches=_ints("--microbatches", str(args.microbatches)),
            train=args.train,
            target=args.target,
            eval_every_steps=args.eval_every_steps,
            predict=args.predict,
            max_stages=args.max_stages,
            replicas=_ints("--replicas", args.replicas),
            link=args.link,
            latency=args.latency,
            bandwidth=args.bandwidth,
            one_device=args.one_device,
            device=args.device,
            measured=Path(args.measured) if args.measured else None,
            out=Path(args.out),
            name=args.name,
        )

    def run_config(self) -> RunConfig:
        """The run config (``config`` with ``overrides``)."""
        from layerpar.config import load_config

        return load_config(self.config, list(self.overrides))

    def out_dir(self, default_name: str) -> Path:
        """``out/<name>`` (``default_name`` through ``time.strftime`` when no name), created."""
        out = self.out / (self.name or time.strftime(default_name))
        out.mkdir(parents=True, exist_ok=True)
        return out

    def command_line(self) -> str:
        """The command that reproduces this run (written with every result)."""
        parts = ["layerpar bench"]
        values = {
            "config": self.config,
            "arms": commas(self.arms),
            "stages": commas(self.stages),
            "repeats": self.repeats,
            "steps": self.steps,
            "warmup-steps": self.warmup_steps,
            "microbatches": commas(self.microbatches),
            "target": self.target,
            "eval-every-steps": self.eval_every_steps,
        }
        parts += [f"--{flag} {value}" for flag, value in values.items() if value is not None]
        parts += [f"--set {o}" for o in self.overrides]
        if self.pin_cores:
            parts.append("--pin-cores")
        if self.train:
            parts.append("--train")
        if self.one_device:
            parts.append(f"--one-device --device {self.device}")
        if self.predict:
            parts.append(f"--predict --max-stages {self.max_stages} --link {self.link}")
        return " ".join(parts)


def _ints(flag: str, text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ConfigError(f"{flag} takes a comma list of integers, got {text!r}") from None


def commas(values: Iterable[object]) -> str:
    """``values`` as a command-line comma list."""
    return ",".join(str(v) for v in values)


DEFAULT = BenchConfig()
"""The defaults of every flag (the parser reads them)."""
