"""Benchmarks (`layerpar bench`): step times, bytes, time-to-target, whole-run training time.

A bench folder's ``summary.json`` holds one result per arm (and K); every ratio is serial's time
over the arm's.  Blocks ``bench`` and ``bench-seeds``; values ``bench`` and ``overhead``.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence

from layerpar.report.results import (
    Record,
    ReportError,
    Results,
    Table,
    mean_std,
    megabytes,
    micro_batches,
    one_arg,
    recorded_commands,
    required,
    signed,
    times,
)

PIPELINE_ARMS = ("gpipe", "1f1b", "interleaved1f1b", "interleavedzb", "zbv", "dualpipev", "deepspeed")
"""The arms a layer-parallel step is compared with at the same K (as in ``layerpar bench``)."""

ARMS = {
    "serial": "serial backprop",
    "layerpar-minimal": "layerpar-minimal (hand-written loop, same math)",
    "layerpar-local": "layerpar-local (pipelined + local classifier heads)",
    "layerpar-local-delayed": "layerpar-local-delayed (local heads, head term with the delayed adjoint)",
    "layerpar-corrected": "layerpar-corrected (pipelined + predicted adjoints, corrected)",
    "ddp": "DDP",
    "gpipe": "GPipe (torch.distributed.pipelining)",
    "1f1b": "1F1B",
    "interleaved1f1b": "interleaved 1F1B",
    "interleavedzb": "interleaved zero-bubble",
    "zbv": "ZBV zero-bubble",
    "dualpipev": "DualPipeV",
    "deepspeed": "DeepSpeed pipeline",
    "serial-threads": "serial, K threads (informational)",
    "contention": "K serial copies at once (informational: contention)",
}
"""The arms as the tables name them (``layerpar`` is labelled by its method, see ``arm_label``)."""


def bench_summary(results: Results, folder: str) -> Record:
    summary = results.load(f"{folder}/summary.json")
    if not summary.get("results"):
        raise ReportError(f"results/{folder}/summary.json has no results")
    return summary


def pick(summary: Record, arm: str) -> Record:
    """The result of ``arm``, or ``arm@K`` where the arm ran at several K; of an arm swept over
    several M, its fastest (``best_m``)."""
    name, _, devices = arm.partition("@")
    found = [
        r
        for r in summary["results"]
        if r["arm"] == name and (not devices or int(r["devices"]) == int(devices))
    ]
    if len(found) > 1 and len({int(r["devices"]) for r in found}) == 1:
        found = [r for r in found if r.get("best_m")][:1]
    if len(found) != 1:
        raise ReportError(f"{len(found)} results match arm {arm!r}; write arm@K where it ran at several K")
    return found[0]


def arm_label(r: Record) -> str:
    """The arm as the README names it, with what defines its schedule (method, micro-batches)."""
    if r["arm"] == "layerpar":
        config = r["config"]
        method = config["layerpar"]["method"]
        if method == "pipelined":
            return f"layerpar (pipelined, M = {micro_batches(config)})"
        return f"layerpar ({method}, AuxNet)"
    label = ARMS.get(str(r["arm"]), str(r["arm"]))
    return f"{label}, M = {r['microbatches']}" if r.get("microbatches") else label


def step_ratio(summary: Record, r: Record) -> float:
    return float(pick(summary, "serial")["step_time_s_median"]) / float(r["step_time_s_median"])


def pipeline_ratio(summary: Record, r: Record) -> float | None:
    """Against the fastest pipeline arm at the same K (``layerpar bench``'s rule)."""
    pipes = [
        float(p["step_time_s_median"])
        for p in summary["results"]
        if p["arm"] in PIPELINE_ARMS and p["devices"] == r["devices"]
    ]
    return min(pipes) / float(r["step_time_s_median"]) if pipes else None


def time_ratio(summary: Record, r: Record, key: str) -> float | None:
    """Serial's time over this arm's: ``time_to_target_s`` or the whole run's ``train_time_s``."""
    serial, mine = pick(summary, "serial").get(key), r.get(key)
    return float(serial) / float(mine) if serial and mine else None


def _time_cell(summary: Record, r: Record, key: str) -> str:
    """``147.2 (1.99×)``; ``not reached`` for a trained arm that missed the target; blank if untrained."""
    if r.get("final_test_acc") is None:
        return ""
    if r.get(key) is None:
        return "not reached"
    ratio = time_ratio(summary, r, key)
    return f"{float(r[key]):.1f}" + (f" ({times(ratio)})" if r["arm"] != "serial" and ratio else "")


def bench_table(results: Results, args: Sequence[str]) -> Table:
    """A multi-process `layerpar bench` run: every arm's step, ratios, bytes and (trained arms)
    accuracy, time to target and whole-run training time, each with its ratio to serial."""
    folder = one_arg("bench", args)
    summary = bench_summary(results, folder)
    header = (
        "arm",
        "devices",
        "step (s)",
        "spread (s)",
        "vs serial",
        "vs best pipeline",
        "bytes/step",
        "peak mem/worker (MB)",
        "final test acc",
        "time to target (s)",
        "whole run (s)",
    )
    rows = [_bench_row(summary, r) for r in summary["results"]]
    return Table(
        header, rows, (f"{folder}/summary.json",), recorded_commands([summary]), _bench_notes(summary)
    )


PROBE_ARMS = frozenset({"contention"})
"""Arms that measure the machine, not a method (``registry.ArmSpec.measures_contention``)."""


def _bench_row(summary: Record, r: Record) -> tuple[str, ...]:
    vs_pipe = None if r["arm"] in PROBE_ARMS else pipeline_ratio(summary, r)
    acc = r.get("final_test_acc")
    return (
        arm_label(r),
        str(r["devices"]),
        f"{float(r['step_time_s_median']):.3f}",
        f"{float(r['step_time_s_spread']):.3f}",
        times(step_ratio(summary, r)),
        times(vs_pipe) if vs_pipe else "",
        megabytes(float(r["bytes_per_step"])),
        f"{float(r['peak_mem_mb']):.0f}" if r.get("peak_mem_mb") is not None else "",
        f"{float(acc):.4f}" if acc is not None else "",
        _time_cell(summary, r, "time_to_target_s"),
        _time_cell(summary, r, "train_time_s"),
    )


def _bench_notes(summary: Record) -> tuple[str, ...]:
    """What a trained row rests on: its seed count, the target and the evaluation interval."""
    serial = pick(summary, "serial")
    if serial.get("final_test_acc") is None:
        return ("Step times only (no `--train`).",)
    seeds = sorted(
        {int(r["config"]["train"]["seed"]) for r in summary["results"] if r.get("final_test_acc") is not None}
    )
    interval = int(serial["epochs_log"][0]["step"])
    plural = "seed" if len(seeds) == 1 else "seeds"
    return (
        f"Accuracy and times: {len(seeds)} {plural} ({', '.join(map(str, seeds))}), trained to the "
        f"end of the preset; target {float(serial['target_acc']):.4f} (serial's final − 0.5 pt), "
        f"evaluated every {interval} batches, so a time to target is resolved to one interval; whole "
        "run = training time of all steps, evaluation excluded.",
    )


def bench_seeds_table(results: Results, args: Sequence[str]) -> Table:
    """The same bench run repeated with other seeds (``--set train.seed=S``): every ratio to serial
    as mean ± std over the seeds, so that a headline speedup does not rest on one seed."""
    if len(args) < 2:
        raise ReportError(f"bench-seeds takes two bench folders or more, got {list(args)}")
    summaries = [bench_summary(results, folder) for folder in args]
    seeds = [int(pick(s, "serial")["config"]["train"]["seed"]) for s in summaries]
    if len(set(seeds)) != len(seeds):
        raise ReportError(f"the bench folders {list(args)} repeat a seed: {seeds}")
    header = (
        "arm",
        "seeds",
        "step vs serial",
        "final test acc",
        "time to target vs serial",
        "whole run vs serial",
    )
    arms = [r["arm"] for r in summaries[0]["results"] if r["arm"] != "serial"]
    rows = [_seeds_row(summaries, arm, seeds) for arm in arms]
    return Table(header, rows, tuple(f"{f}/summary.json" for f in args), recorded_commands(summaries))


def _seeds_row(summaries: Sequence[Record], arm: str, seeds: Sequence[int]) -> tuple[str, ...]:
    mine = [(s, pick(s, arm)) for s in summaries]
    accs = [float(r["final_test_acc"]) for _, r in mine if r.get("final_test_acc") is not None]
    ttt = [time_ratio(s, r, "time_to_target_s") for s, r in mine]
    whole = [time_ratio(s, r, "train_time_s") for s, r in mine]
    return (
        arm_label(mine[0][1]),
        ",".join(map(str, seeds)),
        _spread([step_ratio(s, r) for s, r in mine]),
        mean_std(accs) if accs else "",
        _spread(ttt),
        _spread(whole),
    )


def _spread(ratios: Sequence[float | None]) -> str:
    """``1.79 ± 0.03×`` over the seeds; blank where no seed has the ratio, and the count where only
    some do (a target reached on some seeds only)."""
    known = [r for r in ratios if r is not None]
    if not known:
        return ""
    text = (
        times(known[0])
        if len(known) == 1
        else f"{statistics.mean(known):.2f} ± {statistics.stdev(known):.2f}×"
    )
    return text if len(known) == len(ratios) else f"{text} ({len(known)} of {len(ratios)} seeds)"


BENCH_VALUES: dict[str, Callable[[Record, Record], str]] = {
    "speedup": lambda s, r: times(step_ratio(s, r)),
    "vs-pipeline": lambda s, r: times(required(pipeline_ratio(s, r), "a pipeline arm at this K")),
    "vs-ddp": lambda s, r: times(
        float(pick(s, f"ddp@{r['devices']}")["step_time_s_median"]) / float(r["step_time_s_median"])
    ),
    "bytes": lambda s, r: megabytes(float(r["bytes_per_step"])),
    # the contention arm: how much K busy processes slow each other, and the K-device ceiling
    "contention": lambda s, r: f"{1 / step_ratio(s, r):.2f}",
    "ceiling": lambda s, r: times(int(r["devices"]) * step_ratio(s, r)),
    "step-ms": lambda s, r: f"{1000 * float(r['step_time_s_median']):.1f}",
    "acc": lambda s, r: f"{float(r['final_test_acc']):.4f}",
    "acc-gap": lambda s, r: signed(
        100 * (float(r["final_test_acc"]) - float(pick(s, "serial")["final_test_acc"])), 1
    ),
    "target": lambda s, r: f"{float(r['target_acc']):.4f}",
    "ttt": lambda s, r: f"{float(required(r.get('time_to_target_s'), 'a time to target')):.0f}",
    "ttt-ratio": lambda s, r: times(required(time_ratio(s, r, "time_to_target_s"), "both times to target")),
    "whole": lambda s, r: f"{float(r['train_time_s']):.0f}",
    "whole-ratio": lambda s, r: times(required(time_ratio(s, r, "train_time_s"), "both training times")),
}
"""``bench FOLDER QUANTITY ARM``: one number of a bench run, formatted as its table cell is."""


def value_bench(results: Results, args: Sequence[str]) -> str:
    if len(args) != 3 or args[1] not in BENCH_VALUES:
        raise ReportError(
            f"bench takes FOLDER QUANTITY ARM, QUANTITY one of {sorted(BENCH_VALUES)}; got {list(args)}"
        )
    folder, quantity, arm = args
    summary = bench_summary(results, folder)
    return BENCH_VALUES[quantity](summary, pick(summary, arm))


def value_overhead(results: Results, args: Sequence[str]) -> str:
    """``overhead FOLDER ARM BASE``: how much longer ARM's step is than BASE's (``+2.7 %``)."""
    if len(args) != 3:
        raise ReportError(f"overhead takes FOLDER ARM BASE, got {list(args)}")
    summary = bench_summary(results, args[0])
    arm, base = (float(pick(summary, a)["step_time_s_median"]) for a in args[1:])
    return f"{signed(100 * (arm / base - 1), 1)} %"


def breakdown_table(results: Results, args: Sequence[str]) -> Table:
    """``breakdown FOLDER [ARM [M]]``: where ARM's step went (default ``layerpar``; a pipeline
    arm at M micro-batches), per rank (``bench/breakdown.py``), beside serial's whole step and
    the ideal (serial's step / K) from the same run."""
    if not 1 <= len(args) <= 3:
        raise ReportError(f"breakdown takes FOLDER [ARM [M]], got {list(args)}")
    folder, arm = args[0], (args[1] if len(args) > 1 else "layerpar")
    micro = int(args[2]) if len(args) > 2 else None
    summary = bench_summary(results, folder)
    found = [
        r
        for r in summary["results"]
        if r["arm"] == arm
        and r.get("breakdown_ms_per_step")
        and (micro is None or r.get("microbatches") == micro)
    ]
    name = arm + (f" M = {micro}" if micro is not None else "")
    if len(found) != 1:
        raise ReportError(
            f"results/{folder}/summary.json: {len(found)} {name} results with a breakdown, expected 1"
        )
    row = found[0]
    per_rank = row["breakdown_ms_per_step"]
    header = ("part (ms per step)", *(f"rank {r}" for r in range(len(per_rank))))
    notes = []
    serial = [r for r in summary["results"] if r["arm"] == "serial"]
    if serial:
        whole = 1000 * float(serial[0]["step_time_s_median"])
        k = int(row["devices"])
        slowest = max(rank[STEP] for rank in per_rank)
        notes.append(
            f"Serial backprop's step in the same run: {whole:.1f} ms (median); the ideal at K = {k} is "
            f"{whole / k:.1f} ms, {name}'s slowest rank takes {slowest:.1f} ms (mean)."
        )
    rows = _breakdown_rows(per_rank)
    return Table(header, rows, (f"{folder}/summary.json",), recorded_commands([summary]), tuple(notes))


STEP = "step (mean)"
"""The breakdown's last row (``layerpar/bench/breakdown.py``, which this package must not import:
it needs torch)."""


def _breakdown_rows(per_rank: Sequence[Record]) -> list[tuple[str, ...]]:
    """One row per part, in the JSON's order: ms per step on each rank and its share of the step."""
    rows = []
    for part in per_rank[0]:
        cells = [part]
        for rank in per_rank:
            value, step = float(rank[part]), float(rank[STEP])
            share = 100 * value / step if step else 0.0
            cells.append(f"{value:.1f}" if part == STEP else f"{value:.1f} ({share:.0f} %)")
        rows.append(tuple(cells))
    return rows
