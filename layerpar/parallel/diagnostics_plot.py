"""diagnostics.png of a run: what a user checks to trust a layer-parallel run.

Per evaluation: serial-composition test accuracy, the AuxNet's state error ||a_k − h_k||/||h_k||
and multiplier error ||m_k − v_k||/||v_k|| against the true activation and adjoint; per step:
the constraint residual ||h_k − a_k||/||h_k|| the modules trained against.  A pipelined run (no
AuxNet) shows instead, per step, each module's weight staleness ||θ_now − θ_forward||/||θ_now||
(how far its weights moved between a micro-batch's forward and its update) and the training loss;
the predict-then-correct method, the adjoint cosine of its boundary heads' prediction in its place.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def _read(run_dir: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    records = [
        json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()
    ]
    return [r for r in records if r["kind"] == "step"], [r for r in records if r["kind"] == "epoch"]


def plot_diagnostics(run_dir: str | Path) -> Path:
    """Write ``run_dir/diagnostics.png`` from its metrics.jsonl; returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    steps, evals = _read(run_dir)
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    key = "test_acc" if all("test_acc" in e for e in evals) else "test_loss"
    axes[0].plot([e["epoch"] for e in evals], [e.get(key) for e in evals], marker="o")
    title = "test accuracy" if key == "test_acc" else "held-out loss"
    axes[0].set(title=f"{title} (serial composition)", xlabel="epoch")
    pipelined = any(k.startswith("weight_staleness/") for r in steps for k in r)
    predicted = any(k.startswith("predictor_cosine/") for r in steps for k in r)
    third = (
        ("predictor_cosine/", axes[2], "cos(predicted, true adjoint) (steps)", steps, False)
        if predicted
        else ("loss", axes[2], "training loss (train steps)", steps, True)
    )
    panels = (
        (("weight_staleness/", axes[1], "weight staleness ||θ−θ_fwd||/||θ|| (steps)", steps, True), third)
        if pipelined
        else (
            ("residual/", axes[1], "constraint residual ||h−a||/||h|| (train steps)", steps, True),
            ("aux_state_error/", axes[2], "AuxNet errors vs true values (eval)", evals, True),
        )
    )
    for prefix, axis, title, source, log in panels:
        xkey = "step" if source is steps else "epoch"
        keys = sorted(
            {
                k
                for r in source
                for k in r
                if k.startswith(prefix)
                or (prefix == "aux_state_error/" and k.startswith("multiplier_error/"))
            }
        )
        keys = [k for k in keys if prefix != "loss" or k == "loss"]
        for key in keys:
            # Log axes: a zero (a micro-batch updated in the window it was forwarded in) is left out.
            points = [(r[xkey], r[key]) for r in source if r.get(key) is not None and (r[key] > 0 or not log)]
            axis.plot(
                [p[0] for p in points],
                [p[1] for p in points],
                label=key,
                marker="." if source is evals else None,
            )
        axis.set(title=title, xlabel=xkey)
        if keys:
            axis.legend(fontsize=7)
            if log:
                axis.set_yscale("log")
    fig.tight_layout()
    path = run_dir / "diagnostics.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
