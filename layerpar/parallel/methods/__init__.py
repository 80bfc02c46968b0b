"""Training methods, one file each, behind one interface (``base.Method``); see ``registry``."""

from layerpar.parallel.methods.base import AuxTargets, Method, Phase, Program, StepState
from layerpar.parallel.methods.registry import (
    METHODS,
    check_config,
    loop_steps,
    method_class,
    micro_batches,
    serial_final_epochs,
    warmup_epochs,
)

__all__ = [
    "METHODS",
    "AuxTargets",
    "Method",
    "Phase",
    "Program",
    "StepState",
    "check_config",
    "loop_steps",
    "method_class",
    "micro_batches",
    "serial_final_epochs",
    "warmup_epochs",
]
