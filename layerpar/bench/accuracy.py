"""Accuracy against wall-clock for the arms that train to completion (``ArmSpec.train_mode``:
serial backprop, and layer-parallel with the config's method, K CPU worker processes, one thread
each).  Gives final test accuracy and time-to-target (target: serial's final accuracy − 0.5 pt
unless given).

Training time counts every step, warm-up and serial-hybrid steps included; evaluation is
excluded (DESIGN.md §4).  DDP and the pipeline arms compute exact serial-backprop gradients;
their accuracy is not trained here (reported as not measured), only their step time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from layerpar.bench import registry
from layerpar.config import RunConfig, replace
from layerpar.errors import ConfigError


def train_arm(
    arm: str, devices: int, config: RunConfig, out: Path, eval_every_steps: int | None
) -> dict[str, Any]:
    """Train ``arm`` on ``devices`` worker processes; returns the run's summary record."""
    from layerpar.launchers.local import launch_local

    mode = registry.get(arm).train_mode
    if mode is None:
        trained = [name for name, spec in registry.ARMS.items() if spec.train_mode is not None]
        raise ConfigError(f"arm {arm!r} is not trained to the end (step time only); --train trains {trained}")
    train: dict[str, Any] = {
        "mode": mode,
        "out_dir": str(out / "runs"),
        "progress": False,
        "run_name": f"{arm}-K{devices}",
        "eval_every_steps": eval_every_steps,
    }
    parallel = {"stages": devices, "replicas": 1, "threads_per_worker": 1}
    record = launch_local(replace(config, train=train, parallel=parallel))
    assert record is not None
    return record


def time_to_target(epochs_log: list[dict[str, Any]], target: float) -> float | None:
    """Training seconds at the first evaluation whose accuracy reaches ``target``."""
    for point in epochs_log:
        if point["test_acc"] >= target:
            return float(point["train_time_s"])
    return None


def plot_accuracy(out: Path, curves: dict[str, list[dict[str, Any]]], target: float | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for label, log in curves.items():
        ax.plot([p["train_time_s"] for p in log], [p["test_acc"] for p in log], marker="o", label=label)
    if target is not None:
        ax.axhline(target, color="grey", linestyle="--", linewidth=1, label=f"target {target:.3f}")
    ax.set_xlabel("training wall-clock (s, evaluation excluded)")
    ax.set_ylabel("test accuracy")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "accuracy_vs_time.png", dpi=120)
    plt.close(fig)
