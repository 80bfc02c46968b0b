"""layerpar: layer-parallel training of residual networks with auxiliary networks."""

__version__ = "0.1.0"

__all__ = ["__version__"]
