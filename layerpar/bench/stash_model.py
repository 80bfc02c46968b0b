"""The pipelined method's stash as the cost model predicts it, and beside what the bench measured.

Module k < K−1 forwards a micro-batch and takes its backward D_k = 2(K−1−k) micro-steps later
(``parallel/pipeline_schedule.py``), so at its fullest — just after a forward, before the
oldest backward — it holds D_k + 1 micro-batches.  Their forwards span D_k + 1 consecutive
micro-steps, and the weights change once per window of M micro-steps, so they ran on at most
⌈D_k/M⌉ + 1 weight versions, one stashed copy each (``stash.VersionCopies``).  Each micro-batch
holds what autograd saved for its backward (``Profile.stage_saved``, measured once per cut and
scaled linearly to B/(R·M)) and its output.  The last module backpropagates at once and stashes
nothing.  The measurement is ``parallel/stash_meter.py``'s, taken in the bench's timed steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

from layerpar.bench.profile import Profile
from layerpar.parallel.methods.pipelined import default_micro_batches
from layerpar.parallel.pipeline_schedule import pipeline_delay

FIELDS = ("micro_batches", "weight_versions", "weight_bytes", "activation_bytes", "total_bytes")
"""What the prediction and the measurement both give, per module."""


@dataclass(frozen=True)
class StashPrediction:
    stage: int
    micro_batches: int
    weight_versions: int
    weight_bytes: float
    activation_bytes: float

    @property
    def total_bytes(self) -> float:
        return self.weight_bytes + self.activation_bytes

    def to_dict(self) -> dict[str, Any]:
        return {"stage": self.stage, **{name: getattr(self, name) for name in FIELDS}}


def predict_stash(
    profile: Profile, stages: int, micro: int | None = None, replicas: int = 1
) -> list[StashPrediction] | None:
    """Per module, the largest stash of the pipelined method at K = ``stages`` (None when the
    profile has no saved-bytes measurement of that cut)."""
    micro = micro or profile.accumulate or default_micro_batches(stages)
    batch = profile.batch_size / (replicas * micro)
    saved = profile.saved_bytes_at(stages, batch)
    if saved is None:
        return None
    bounds, saved_bytes = saved
    outputs = profile.activation_bytes_at(batch)
    out = []
    for k, (a, b) in enumerate(pairwise(bounds)):
        delay = pipeline_delay(k, stages)
        if k == stages - 1:
            out.append(StashPrediction(k, 0, 0, 0.0, 0.0))
            continue
        versions = math.ceil(delay / micro) + 1
        in_flight = delay + 1
        out.append(
            StashPrediction(
                stage=k,
                micro_batches=in_flight,
                weight_versions=versions,
                weight_bytes=versions * float(sum(profile.param_bytes[a:b])),
                activation_bytes=in_flight * (saved_bytes[k] + outputs[b - 1]),
            )
        )
    return out


def stash_validation(profile: Profile, measured: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per measured layerpar row with a stash and per module: predicted and measured values and
    the relative error of the total."""
    rows = []
    for row in measured:
        per_rank = row.get("stash_bytes_per_rank")
        if row.get("arm") != "layerpar" or not per_rank:
            continue
        stages = int(row["devices"])
        accumulate = (row.get("config") or {}).get("layerpar", {}).get("accumulate")
        predicted = predict_stash(profile, stages, accumulate)
        if predicted is None:
            continue
        for p, m in zip(predicted, per_rank[:stages], strict=False):
            error = (p.total_bytes - m["total_bytes"]) / m["total_bytes"] if m["total_bytes"] else None
            rows.append(
                {
                    "stages": stages,
                    "stage": p.stage,
                    "predicted": p.to_dict(),
                    "measured": {name: m[name] for name in FIELDS},
                    "total_error": error,
                }
            )
    return rows
