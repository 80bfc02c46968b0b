"""Every training method by name, and the settings that depend on which one a run uses.

Adding a method is one file in this folder and one line in ``METHODS``.  Method-dependent
defaults (serial phases, micro-batches) are resolved here and nowhere else, when a run starts:
the config keeps ``null``, so ``--set`` and ``config.replace`` of the method work in any order.
"""

from __future__ import annotations

import dataclasses

from layerpar.auxnet.ablation import ORACLE_PARTS
from layerpar.config import RunConfig
from layerpar.errors import ConfigError
from layerpar.parallel.methods.al import AugmentedLagrangian
from layerpar.parallel.methods.base import Method
from layerpar.parallel.methods.corrected import Corrected
from layerpar.parallel.methods.delayed import Delayed
from layerpar.parallel.methods.local import LocalHeads
from layerpar.parallel.methods.penalty import Penalty
from layerpar.parallel.methods.pipelined import Pipelined
from layerpar.parallel.methods.serial import Serial

METHODS: dict[str, type[Method]] = {
    method.name: method
    for method in (Pipelined, AugmentedLagrangian, Penalty, Delayed, Corrected, LocalHeads, Serial)
}


def method_class(config: RunConfig) -> type[Method]:
    """The method a run's workers use (serial backprop for ``train.mode: serial``)."""
    if config.train.mode == "serial":
        return Serial
    name = config.layerpar.method
    if name not in METHODS:
        raise ConfigError(f"layerpar.method={name!r} is not a method; valid: {', '.join(METHODS)}")
    return METHODS[name]


def micro_batches(config: RunConfig) -> int:
    """Micro-batches each batch is fed in (loop steps per optimiser step)."""
    return method_class(config).micro_batches(config)


def warmup_epochs(config: RunConfig) -> float:
    value = config.layerpar.warmup_epochs
    return method_class(config).default_warmup_epochs if value is None else value


def serial_final_epochs(config: RunConfig) -> float:
    value = config.layerpar.serial_final_epochs
    return method_class(config).default_serial_final_epochs if value is None else value


def loop_steps(config: RunConfig, batches: int | None) -> int | None:
    """A count of batches (optimiser steps) in steps of the training loop (micro-batches)."""
    return None if batches is None else batches * micro_batches(config)


def check_config(config: RunConfig) -> RunConfig:
    """Refuse settings the run's method cannot honour (each error says the fix); returns config."""
    method = method_class(config)
    lp = config.layerpar
    if lp.accumulate is not None and lp.accumulate > 1 and not method.micro_batched:
        raise ConfigError(
            f"layerpar.accumulate={lp.accumulate} is for a micro-batched method (pipelined), not "
            f"{method.name}: leave it null"
        )
    if lp.serial_every and not method.allows_serial_every:
        raise ConfigError(
            f"layerpar.method={method.name} cannot interleave serial steps: set layerpar.serial_every=0 "
            f"(got {lp.serial_every})"
        )
    if lp.oracle is not None:
        _check_oracle(lp.oracle, method)
    # The method checks the resolved values (its own defaults filled in).
    resolved = dataclasses.replace(
        lp, warmup_epochs=warmup_epochs(config), serial_final_epochs=serial_final_epochs(config)
    )
    method.check_config(dataclasses.replace(config, layerpar=resolved))
    return config


def _check_oracle(oracle: str, method: type[Method]) -> None:
    """``layerpar.oracle`` names a part, and the method has that part to replace."""
    if oracle not in ORACLE_PARTS:
        raise ConfigError(
            f"layerpar.oracle={oracle!r} is not an ablation; valid: {', '.join(ORACLE_PARTS)} or null"
        )
    if not method.needs_aux:
        raise ConfigError(
            f"layerpar.oracle={oracle} replaces an AuxNet's prediction, and layerpar.method={method.name} "
            "uses none: pick an AuxNet method (al, penalty, delayed) or set layerpar.oracle=null"
        )
    if "multipliers" in ORACLE_PARTS[oracle] and not method.aux_multipliers:
        raise ConfigError(
            f"layerpar.oracle={oracle} replaces the multipliers, and layerpar.method={method.name} takes "
            "none from the AuxNet: use layerpar.method=al, or layerpar.oracle=states"
        )
