"""The oracle ablations of the AuxNet methods (``layerpar.oracle``, issue 11's diagnosis).

Which half of the AuxNet's prediction loses the signal?  ``layerpar.oracle`` replaces one half
of what the modules receive with the truth from a serial pass at the current weights, while
the AuxNet keeps training on its own predictions:

- ``multipliers``: the true per-sample adjoints m_k = B·∂ℓ/∂h_k; inputs and anchors stay the
  AuxNet's predicted states (ablation (a)),
- ``states``: the true inputs and anchors h_k; multipliers stay the AuxNet's (ablation (b)),
- ``both``: every module gets the truth, so the AL step is serial backprop (ablation (c);
  the oracle property, tests/unit/parallel/test_oracle.py).

The oracle needs every module's current weights, so only the in-process trainer (all modules in
one process) can run it; K worker processes refuse it (``launchers.check_launchable``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from layerpar.auxnet.network import AuxOutput
from layerpar.auxnet.oracle import OracleAux

ORACLE_PARTS: dict[str, frozenset[str]] = {
    "states": frozenset({"states"}),
    "multipliers": frozenset({"multipliers"}),
    "both": frozenset({"states", "multipliers"}),
}
"""``layerpar.oracle`` -> the parts of the AuxNet's output the truth replaces."""


def substitute(own: AuxOutput, truth: AuxOutput, parts: frozenset[str]) -> AuxOutput:
    """The AuxNet's prediction ``own`` with ``parts`` taken from ``truth`` (same boundaries)."""
    count = len(own.states)
    states = list(truth.states[:count]) if "states" in parts else own.states
    multipliers = list(truth.multipliers[:count]) if "multipliers" in parts else own.multipliers
    return AuxOutput(states, multipliers)


class SharedOracle:
    """One serial pass per step for all K workers of one process.

    The K workers of the in-process trainer ask for the truth of the same batch at the same
    weights in the same phase; the first call computes it and the others reuse it.  The cache
    holds the batch tensors themselves and every parameter's version counter, so a new batch or
    any optimiser step (an in-place update bumps ``_version``) computes afresh.
    """

    def __init__(self, stages: Sequence[nn.Module], loss_fn: Callable[..., torch.Tensor]) -> None:
        self.oracle = OracleAux(stages, loss_fn)
        self._parameters = [p for stage in stages for p in stage.parameters()]
        self._key: tuple[object, ...] | None = None
        self._truth: AuxOutput | None = None

    def __call__(
        self, x: torch.Tensor, y: torch.Tensor, upto: int | None = None, cond: torch.Tensor | None = None
    ) -> AuxOutput:
        if self._truth is None or not self._same((x, y, cond, self._versions())):
            # The truth of every boundary (OracleAux ignores ``upto``): any worker may reuse it.
            self._truth = self.oracle(x, y, None, cond)
            self._key = (x, y, cond, self._versions())
        return self._truth

    def _versions(self) -> tuple[int, ...]:
        return tuple(p._version for p in self._parameters)

    def _same(self, key: tuple[object, ...]) -> bool:
        assert self._key is not None
        tensors_same = all(a is b for a, b in zip(key[:3], self._key[:3], strict=True))
        return tensors_same and key[3] == self._key[3]
