"""layerpar: layer-parallel training of deep residual networks.

The public API::

    import layerpar
    summary = layerpar.fit(model, train_data, test_data, loss=..., overrides=[...])

and, for finer control, the trainers and config helpers exported here.
"""

from layerpar.api import fit
from layerpar.config import RunConfig, load_config, replace
from layerpar.errors import ConfigError, LayerparError
from layerpar.parallel.methods import METHODS, Method
from layerpar.parallel.partition import split
from layerpar.parallel.session import RunSummary
from layerpar.parallel.trainer import LayerParallelTrainer, SerialTrainer

__version__ = "0.1.0"

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
