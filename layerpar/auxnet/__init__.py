"""Auxiliary networks: builders, their objective, the oracle, and their cost."""

from layerpar.auxnet.cost import aux_cost_fraction, parameter_fraction
from layerpar.auxnet.network import AuxNet, AuxOutput, build_auxnet
from layerpar.auxnet.objective import aux_loss, squared_error
from layerpar.auxnet.oracle import OracleAux
from layerpar.auxnet.probe import boundary_shapes

__all__ = [
    "AuxNet",
    "AuxOutput",
    "OracleAux",
    "aux_cost_fraction",
    "aux_loss",
    "boundary_shapes",
    "build_auxnet",
    "parameter_fraction",
    "squared_error",
]
