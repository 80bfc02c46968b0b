"""The README's accuracy-parity table, regenerated from the per-run JSON in results/parity/.

    python scripts/parity_table.py [--results results/parity] [--prefix full-]

Groups the runs by dataset, model, arm, K and device kind (cpu or gpu: serial's accuracy differs
between CPU and GPU numerics by more than between seeds); prints serial and layer-parallel
accuracy as mean ± std over seeds, the gap (layer-parallel − serial, in points) and the seeds
used.  The gap is taken over the seeds both arms ran, against the serial twin with the same
dataset, model, epochs and device kind; a group without one is listed with "–".
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path


def load_runs(folder: Path, prefix: str) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(folder.glob(f"{prefix}*.json"))]


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def table(runs: list[dict]) -> str:
    groups: dict[tuple, dict[int, float]] = defaultdict(dict)
    for run in runs:
        kind = "cpu" if run.get("device", "cpu") == "cpu" else "gpu"
        key = (run["dataset"], run["model"], run["epochs"], kind, run["arm"], run["stages"])
        groups[key][run["seed"]] = run["final_test_acc"]
    lines = ["| dataset | model | epochs | device | arm | K | serial acc | layer-parallel acc | gap (pt) | seeds |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for (dataset, model, epochs, kind, arm, k), accs in sorted(groups.items()):
        if arm == "serial":
            continue
        serial = groups.get((dataset, model, epochs, kind, "serial", 1)) or {}
        seeds = sorted(set(accs) & set(serial))
        if not seeds:  # no serial twin on this kind of device: the layer-parallel runs alone
            p_mean, p_std = _mean_std(list(accs.values()))
            lines.append(f"| {dataset} | {model} | {epochs:g} | {kind} | {arm} | {k} | – | "
                         f"{100 * p_mean:.2f} ± {100 * p_std:.2f} | – | {','.join(map(str, sorted(accs)))} |")
            continue
        s_mean, s_std = _mean_std([serial[s] for s in seeds])
        p_mean, p_std = _mean_std([accs[s] for s in seeds])
        lines.append(f"| {dataset} | {model} | {epochs:g} | {kind} | {arm} | {k} | {100 * s_mean:.2f} ± {100 * s_std:.2f} | "
                     f"{100 * p_mean:.2f} ± {100 * p_std:.2f} | {100 * (p_mean - s_mean):+.2f} | "
                     f"{','.join(map(str, seeds))} |")
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", default="results/parity")
    parser.add_argument("--prefix", default="full-")
    args = parser.parse_args()
    print(table(load_runs(Path(args.results), args.prefix)))
