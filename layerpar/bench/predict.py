"""Per-arm predictions from a ``Profile``: ``predict`` (one arm, one layout, by the arm's
``registry.ArmSpec.predict`` hook into ``costmodel.py``) and ``predict_table`` (every arm × K × R
× M, with a note where a layout is impossible).

``layerpar bench --predict`` is ``predict_run.run_predict``; checking the table against
measurements is ``validate.py``, writing and printing it ``predict_report.py``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from layerpar.bench import registry
from layerpar.bench.costmodel import Link, Prediction, get_link
from layerpar.bench.profile import Profile, partition_bounds
from layerpar.bench.registry import SERIAL
from layerpar.errors import ConfigError


def predict(
    arm: str,
    profile: Profile,
    stages: int = 1,
    replicas: int = 1,
    *,
    link: Link,
    microbatches: int = 4,
    contention: float = 1.0,
) -> Prediction | None:
    """Predicted step of ``arm`` on ``stages`` × ``replicas`` devices (None: cannot be laid out),
    by the arm's ``predict`` hook in the registry."""
    _check_modelled([arm])
    hook = registry.ARMS[arm].predict
    assert hook is not None
    return hook(profile, stages, replicas, link=link, microbatches=microbatches, contention=contention)


def _check_modelled(arms: Sequence[str]) -> None:
    registry.check(arms)
    missing = [a for a in arms if registry.ARMS[a].predict is None]
    if missing:
        raise ConfigError(f"no cost model for arm(s) {missing}; valid: {', '.join(registry.predictable())}")


def sweeps_microbatches(arm: str) -> bool:
    """Whether ``arm`` takes ``--microbatches`` (a pipeline arm: its rows sweep M)."""
    spec = registry.ARMS.get(arm)
    return spec is not None and spec.microbatches


def predict_table(
    profile: Profile,
    stages_list: Iterable[int] = range(1, 65),
    replicas_list: Iterable[int] = (1,),
    arms: Sequence[str] | None = None,
    link: Link | None = None,
    microbatches: int | Iterable[int] = 4,
    contention: float = 1.0,
) -> list[dict[str, Any]]:
    """One row per arm × K × R (× M for pipelines); ``step_time_s`` is None, with a ``note``
    saying why, where the layout is impossible (K beyond the number of blocks, a shard or
    micro-batch smaller than one sample) or the profile lacks that K's AuxNet timings.
    Serial appears once (K = R = 1).  ``arms``: default every arm with a cost model."""
    link = link or get_link()
    arms = registry.predictable() if arms is None else arms
    _check_modelled(arms)
    ms = [microbatches] if isinstance(microbatches, int) else list(microbatches)
    baseline = predict(SERIAL, profile, link=link)
    assert baseline is not None
    serial_s = baseline.step_s
    rows = []
    for arm in arms:
        one = registry.ARMS[arm].devices == "one"
        layouts = [(1, 1)] if one else [(k, r) for k in stages_list for r in replicas_list]
        for k, r in layouts:
            for m in ms if sweeps_microbatches(arm) else [None]:
                row: dict[str, Any] = {
                    "arm": arm,
                    "stages": k,
                    "replicas": r,
                    "devices": k * r,
                    "microbatches": m,
                    "link": link.name,
                    "contention": contention,
                }
                try:
                    p = predict(arm, profile, k, r, link=link, microbatches=m or 1, contention=contention)
                except KeyError as missing:  # the profile lacks this K's AuxNet
                    row.update(step_time_s=None, note=str(missing.args[0]))
                    rows.append(row)
                    continue
                if p is None:
                    row.update(step_time_s=None, note=_why_not(profile, arm, k, r, m))
                else:
                    row.update(
                        step_time_s=p.step_s,
                        speedup_vs_serial=serial_s / p.step_s,
                        samples_per_s=profile.batch_size / p.step_s,
                        compute_s=p.compute_s,
                        comm_s=p.comm_s,
                        bounds=list(p.bounds),
                        stage_s=list(p.stage_s),
                        rank_compute_s=list(p.rank_compute_s),
                    )
                rows.append(row)
    return rows


def _why_not(profile: Profile, arm: str, k: int, r: int, m: int | None) -> str:
    splits = registry.ARMS[arm].splits_model
    if splits and partition_bounds(profile, k) is None:
        return f"cannot cut {profile.num_blocks} blocks into {k} stages"
    if not splits:
        return f"batch {profile.batch_size} cannot be sharded over {k * r} devices"
    if m is not None:
        return f"batch {profile.batch_size} / {r} replicas cannot make {m} micro-batches"
    return f"batch {profile.batch_size} cannot be sharded over {r} replicas"
