"""The augmented-Lagrangian method (``layerpar.method: al``): the penalty method plus the
AuxNet's multipliers m_k in the local loss and its targets (DESIGN.md §2, steps 3 and 7).

Its oracle property: with a_k = the true h_k and m_k = the true per-sample adjoint
B·∂ℓ/∂h_k, every local gradient equals serial backprop's (tests/unit/parallel/test_oracle.py).
"""

from __future__ import annotations

import torch

from layerpar.auxnet import AuxOutput
from layerpar.parallel.methods.penalty import Penalty


class AugmentedLagrangian(Penalty):
    name = "al"
    aux_multipliers = True

    def multiplier(self, out: AuxOutput) -> torch.Tensor | None:
        m = out.multipliers[self.worker.stage]
        return m.detach() if m is not None else None
