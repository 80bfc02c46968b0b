"""Local classifier heads on the pipelined method (``layerpar.method: local``; issue 11, build
item 3): deep supervision of every boundary, on top of the exact delayed gradient.

Module k < K adds the gradient of a local cross-entropy α·CE(head_k(h_k), y) (DGL / InfoPro's
local loss; α = ``layerpar.predictor_scale``, default 1) to its update at the forward of each
micro-batch, and later the true delayed gradient of ℓ as the pipelined method does
(``layerpar.head_term: delayed``: both in one backward when the delayed gradient arrives, which
saves the second backward of each micro-batch; docs/parity.md measures both).  The head's
term is never subtracted, and its input gradient travels upstream with the true adjoint, so the
modules minimise ℓ + α Σ_k CE_k: the objective of deeply supervised nets (Lee et al., 2015),
trained layer-parallel.

It is ``layerpar.method: corrected`` with ``predictor: gradient``, ``predictor_scale: 1`` and
``correct: false`` (``methods/corrected.py`` has the mechanics; the tests check the two are the
same run); the heads live in ``auxnet/adjoint_head.py``.
"""

from __future__ import annotations

from layerpar.config import RunConfig
from layerpar.parallel.methods.corrected import Corrected


class LocalHeads(Corrected):
    name = "local"
    sends_backward = "∂(ℓ + α Σ local CE)/∂h_{k−1} of the micro-batch forwarded 2(K−1−k) steps ago"

    @classmethod
    def auxiliary(cls) -> str:
        return "no AuxNet; a classifier head per boundary adds its local loss (deep supervision)"

    @classmethod
    def predictor(cls, config: RunConfig) -> str:
        return "gradient"

    @classmethod
    def fixed_scale(cls, config: RunConfig) -> float | None:
        scale = config.layerpar.predictor_scale
        return 1.0 if scale is None else scale

    @classmethod
    def corrects(cls, config: RunConfig) -> bool:
        return False
