"""The denoiser quality study (``scripts/diffusion_study.py``): one row per arm, mean ± std over
its seeds, each metric beside serial backprop's and against issue 12's criteria.

2-D data: sliced Wasserstein distance within 10 % of serial's.  Images: held-out denoising loss
within 3 %, classifier Fréchet distance within 10 %, conditional accuracy within 2 points.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

from layerpar.report.results import Record, ReportError, Results, Table, one_arg, recorded_commands

ARM_ORDER = ("serial", "pipelined-K2", "pipelined-K4", "al-K2", "al-K4", "penalty-K2")


def _mean_std(values: Sequence[float], form: str) -> str:
    mean = statistics.fmean(values)
    if len(values) < 2:
        return format(mean, form)
    return f"{format(mean, form)} ± {format(statistics.stdev(values), form)}"


def _metric(records: Sequence[Record], name: str) -> list[float]:
    return [float(r["metrics"][name]) for r in records]


def _relative(records: Sequence[Record], serial: Sequence[Record], name: str) -> float:
    return statistics.fmean(_metric(records, name)) / statistics.fmean(_metric(serial, name)) - 1


def _by_arm(results: Results, folder: str) -> dict[str, list[Record]]:
    arms: dict[str, list[Record]] = {}
    for path in results.glob(f"{folder}/*-s*.json"):
        record = results.load(path)
        arms.setdefault(str(record["arm"]), []).append(record)
    if "serial" not in arms:
        raise ReportError(f"results/{folder} has no serial run: every arm is compared with it")
    return dict(
        sorted(arms.items(), key=lambda item: ARM_ORDER.index(item[0]) if item[0] in ARM_ORDER else 99)
    )


def _verdict(checks: Sequence[bool]) -> str:
    return "yes" if all(checks) else "no"


def _point_row(arm: str, records: Sequence[Record], serial: Sequence[Record]) -> tuple[str, ...]:
    swd = _relative(records, serial, "swd")
    return (
        arm,
        str(len(records)),
        _mean_std(_metric(records, "held_out_loss"), ".4f"),
        _mean_std(_metric(records, "swd"), ".4f"),
        "–" if arm == "serial" else f"{swd:+.1%}",
        f"{statistics.fmean(_metric(records, 'swd_floor')):.4f}",
        _mean_std([1e3 * v for v in _metric(records, "mmd")], ".2f"),
        "–" if arm == "serial" else _verdict([swd <= 0.10]),
    )


def _image_row(arm: str, records: Sequence[Record], serial: Sequence[Record]) -> tuple[str, ...]:
    loss, fd = _relative(records, serial, "held_out_loss"), _relative(records, serial, "classifier_fd")
    acc = statistics.fmean(_metric(records, "cond_acc")) - statistics.fmean(_metric(serial, "cond_acc"))
    return (
        arm,
        str(len(records)),
        _mean_std(_metric(records, "held_out_loss"), ".4f"),
        "–" if arm == "serial" else f"{loss:+.1%}",
        _mean_std(_metric(records, "classifier_fd"), ".2f"),
        "–" if arm == "serial" else f"{fd:+.1%}",
        f"{statistics.fmean(_metric(records, 'classifier_fd_floor')):.2f}",
        _mean_std([100 * v for v in _metric(records, "cond_acc")], ".1f"),
        "–" if arm == "serial" else _verdict([loss <= 0.03, fd <= 0.10, acc >= -0.02]),
    )


IMAGE_HEADER: tuple[str, ...] = (
    "arm",
    "seeds",
    "held-out loss",
    "vs serial",
    "classifier FD",
    "vs serial",
    "FD floor",
    "cond. acc %",
    "criteria met",
)
POINT_HEADER: tuple[str, ...] = (
    "arm",
    "seeds",
    "held-out loss",
    "SWD",
    "SWD vs serial",
    "SWD floor",
    "MMD ×1e3",
    "within 10 %",
)


def _note(first: Record, images: bool) -> str:
    m = first["metrics"]
    epochs = float(first["epochs"])
    run = f"{first['model']} on {first['dataset']}, {epochs:g} epochs each; {m['n']} samples per run"
    if not images:
        return (
            f"{run} ({m['sampler']}, EMA weights) against {m['n']} held-out points; the floor is two "
            f"disjoint sets of {m['n']} held-out points. AuxNet methods keep their defaults (serial "
            "warm-up and final epochs)."
        )
    accuracy = 100 * float(m["classifier_test_acc"])
    return (
        f"{run} ({m['sampler']} {m['sample_steps']} steps, guidance {m['guidance']:g}, EMA weights). "
        f"FD is in the features of layerpar's own classifier (test accuracy {accuracy:.2f} %; not "
        "FID); the floor is n training images against the same held-out ones. Criteria: loss "
        "within 3 %, FD within 10 %, conditional accuracy within 2 pt of serial."
    )


def diffusion_table(results: Results, args: Sequence[str]) -> Table:
    """``diffusion FOLDER``: the study's arms (results/FOLDER/<arm>-s<seed>.json)."""
    folder = one_arg("diffusion", args)
    arms = _by_arm(results, folder)
    serial = arms["serial"]
    images = "classifier_fd" in serial[0]["metrics"]
    records = [r for rs in arms.values() for r in rs]
    first = serial[0]
    if images:
        header = IMAGE_HEADER
        rows = [_image_row(arm, rs, serial) for arm, rs in arms.items()]
    else:
        header = POINT_HEADER
        rows = [_point_row(arm, rs, serial) for arm, rs in arms.items()]
    notes = (_note(first, images),)
    sources = tuple(sorted(f"{folder}/{r['arm']}-s{r['seed']}.json" for r in records))
    return Table(header, rows, sources, recorded_commands(records), notes)


def diffusion_seeds_table(results: Results, args: Sequence[str]) -> Table:
    """``diffusion-seeds FOLDER``: every image-study run against serial of the same seed, so that
    a mean that meets the criteria does not hide a seed that misses them."""
    folder = one_arg("diffusion-seeds", args)
    arms = _by_arm(results, folder)
    serial = {int(r["seed"]): r for r in arms["serial"]}
    if "classifier_fd" not in arms["serial"][0]["metrics"]:
        raise ReportError(f"diffusion-seeds compares image studies; results/{folder} is a 2-D study")
    rows = [
        (f"{row[0]}, seed {r['seed']}", *row[2:])
        for arm, records in arms.items()
        if arm != "serial"
        for r in sorted(records, key=lambda r: int(r["seed"]))
        if int(r["seed"]) in serial
        for row in [_image_row(arm, [r], [serial[int(r["seed"])]])]
    ]
    header = ("arm, seed", *IMAGE_HEADER[2:])
    used = [r for rs in arms.values() for r in rs]
    sources = tuple(sorted(f"{folder}/{r['arm']}-s{r['seed']}.json" for r in used))
    notes = ("Each row against serial backprop with the same seed.",)
    return Table(header, rows, sources, recorded_commands(used), notes)
