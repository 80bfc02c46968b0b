"""Predict, then correct (issue 11): per run, the accuracy beside how well the boundary heads
predicted the adjoint (``predictor_cosine/k``, ``predictor_scale/k``: last-epoch means of the
per-step metrics that ``scripts/parity_sweep.py`` keeps as ``step_metric_means``)."""

from __future__ import annotations

from collections.abc import Sequence

from layerpar.report.results import (
    Record,
    ReportError,
    Results,
    Table,
    epoch_accuracies,
    micro_batches,
    recorded_commands,
    signed,
)


def _method(r: Record) -> str:
    lp = r["config"]["layerpar"]
    if lp["method"] == "local":
        alpha = lp.get("predictor_scale")
        # Runs from before head_term existed applied the term at the forward.
        when = ", with the delayed adjoint" if lp.get("head_term") == "delayed" else ""
        return f"local term, kept, gradient (α = {1 if alpha is None else alpha:g}{when})"
    if lp["method"] != "corrected":
        return str(lp["method"])
    scale = lp.get("predictor_scale")
    if not lp.get("correct", True):  # the local method's settings, spelt out
        return f"local term, kept, {lp.get('predictor', 'linear')} (α = {1 if scale is None else scale:g})"
    c = "calibrated" if scale is None else f"{scale:g}"
    return f"predict + correct, {lp.get('predictor', 'linear')} (c = {c})"


def _last_epoch_means(r: Record, prefix: str, boundaries: int) -> str:
    means = r.get("step_metric_means") or []
    if not means or r["config"]["layerpar"]["method"] not in ("corrected", "local"):
        return "–"
    last = means[-1]
    values = [last.get(f"{prefix}/{k}") for k in range(boundaries)]
    return " / ".join("–" if v is None else f"{float(v):.2f}" for v in values)


def predictor_table(results: Results, args: Sequence[str]) -> Table:
    """``predictors SERIAL[,SERIAL...] GLOB ...``: one row per run of the globs, sorted by K,
    micro-batches, method and seed, each with its gap to the serial run of its seed (same data
    and device)."""
    if len(args) < 2:
        raise ReportError("predictors takes the serial runs (a comma list), then globs of run files")
    twins, patterns = args[0].split(","), args[1:]
    serial = {int(r["seed"]): float(r["final_test_acc"]) for r in map(results.load, twins)}
    paths = sorted({path for pattern in patterns for path in results.glob(pattern)})
    records = [results.load(path) for path in paths]
    records.sort(key=lambda r: (int(r["stages"]), micro_batches(r["config"]), _method(r), int(r["seed"])))
    header = (
        "method",
        "K",
        "micro-batches M",
        "seed",
        "test acc by epoch",
        "gap to serial (pt)",
        "adjoint cosine per boundary",
        "update cosine per module",
        "scale c per boundary",
    )
    rows: list[tuple[str, ...]] = []
    for r in records:
        seed, boundaries = int(r["seed"]), int(r["stages"]) - 1
        if seed not in serial:
            raise ReportError(f"no serial twin for seed {seed} among {', '.join(twins)}")
        rows.append(
            (
                _method(r),
                str(r["stages"]),
                str(micro_batches(r["config"])),
                str(seed),
                " / ".join(f"{a:.4f}" for a in epoch_accuracies(r)),
                signed(100 * (float(r["final_test_acc"]) - serial[seed]), 2),
                _last_epoch_means(r, "predictor_cosine", boundaries),
                _last_epoch_means(r, "prediction_update_cosine", boundaries),
                _last_epoch_means(r, "predictor_scale", boundaries),
            )
        )
    accs = ", ".join(f"{100 * acc:.2f} % (seed {seed})" for seed, acc in sorted(serial.items()))
    notes = (
        f"Serial backprop on this screen: {accs}. Adjoint cosine: cos(prediction, true adjoint) of each "
        "micro-batch when its adjoint arrives, boundary 1 first, mean over the last epoch; 1 = the "
        "prediction is the adjoint, 0 = no signal. Update cosine: cos(update the head's prediction "
        "drives, exact gradient of the same micro-batch and weights), module 1 first. Scale: c (α for a "
        "kept local term).",
    )
    used = [*records, *map(results.load, twins)]
    return Table(header, rows, (*twins, *patterns), recorded_commands(used), notes)
