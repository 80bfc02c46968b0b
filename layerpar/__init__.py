"""layerpar: layer-parallel training of deep residual networks.

The public API::

    import layerpar
    summary = layerpar.fit(model, train_data, test_data, loss=..., overrides=[...])

and, for finer control, the trainers, methods and config helpers named in ``__all__``.  They are
imported on first use, so ``import layerpar`` (and tools such as ``python -m layerpar.report``)
do not load torch until something needs it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from layerpar.api import fit
    from layerpar.config import RunConfig, load_config, replace
    from layerpar.errors import ConfigError, LayerparError
    from layerpar.parallel.methods import METHODS, Method
    from layerpar.parallel.partition import split
    from layerpar.parallel.session import RunSummary
    from layerpar.parallel.trainer import LayerParallelTrainer, SerialTrainer

__version__ = "0.1.0"

_EXPORTS = {
    "fit": "layerpar.api",
    "RunConfig": "layerpar.config",
    "load_config": "layerpar.config",
    "replace": "layerpar.config",
    "ConfigError": "layerpar.errors",
    "LayerparError": "layerpar.errors",
    "METHODS": "layerpar.parallel.methods",
    "Method": "layerpar.parallel.methods",
    "split": "layerpar.parallel.partition",
    "RunSummary": "layerpar.parallel.session",
    "LayerParallelTrainer": "layerpar.parallel.trainer",
    "SerialTrainer": "layerpar.parallel.trainer",
}

__all__ = [
    "METHODS",
    "ConfigError",
    "LayerParallelTrainer",
    "LayerparError",
    "Method",
    "RunConfig",
    "RunSummary",
    "SerialTrainer",
    "__version__",
    "fit",
    "load_config",
    "replace",
    "split",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'layerpar' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
