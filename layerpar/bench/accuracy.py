"""Accuracy against wall-clock for the arms that train to completion (``ArmSpec.train_mode``:
serial backprop, and layer-parallel with the config's method, K CPU worker processes, one thread
each).  Gives final test accuracy and time-to-target (target: serial's final accuracy − 0.5 pt
unless given).  A denoiser has no accuracy: its curve is the held-out denoising loss (lower is
better), and its target a loss to get down to (default: serial's final loss + 2 %).

Training time counts every step, warm-up and serial-hybrid steps included; evaluation is
excluded (DESIGN.md §4).  DDP and the pipeline arms compute exact serial-backprop gradients;
their accuracy is not trained here (reported as not measured), only their step time.
"""

from __future__ import annotations

from dataclasses import dataclass
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

    spec = registry.get(arm)
    mode = spec.train_mode
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
    record = launch_local(replace(spec.configured(config), train=train, parallel=parallel))
    assert record is not None
    return record


@dataclass(frozen=True)
class Metric:
    """What ``--train`` tracks: a classifier's test accuracy or a denoiser's held-out loss."""

    key: str
    """Its name in the run's evaluations (``epochs_log``, ``final_eval``)."""
    higher_is_better: bool
    label: str
    """The plot's y axis and the table's column."""

    @property
    def final_key(self) -> str:
        """The summary row's field of the final value (``final_test_acc`` / ``final_test_loss``)."""
        return f"final_{self.key}"

    @property
    def target_key(self) -> str:
        return "target_acc" if self.higher_is_better else "target_loss"

    def reached(self, value: float, target: float) -> bool:
        return value >= target if self.higher_is_better else value <= target

    def default_target(self, serial_final: float) -> float:
        """Serial's final accuracy − 0.5 pt, or serial's final loss + 2 % (DESIGN.md §4)."""
        return serial_final - 0.005 if self.higher_is_better else serial_final * 1.02


ACCURACY = Metric("test_acc", True, "test accuracy")
HELD_OUT_LOSS = Metric("test_loss", False, "held-out denoising loss (lower is better)")


def metric_for(config: RunConfig) -> Metric:
    return HELD_OUT_LOSS if config.is_diffusion else ACCURACY


def final_value(record: dict[str, Any], metric: Metric) -> float | None:
    """The run's final ``metric`` (its last evaluation; a classifier's ``final_test_acc``)."""
    if metric is ACCURACY:
        return record.get("final_test_acc")
    final = (record.get("final_eval") or {}).get(metric.key)
    if final is None and record.get("epochs_log"):
        final = record["epochs_log"][-1].get(metric.key)
    return None if final is None else float(final)


def time_to_target(
    epochs_log: list[dict[str, Any]], target: float, metric: Metric = ACCURACY
) -> float | None:
    """Training seconds at the first evaluation whose ``metric`` reaches ``target``."""
    for point in epochs_log:
        if metric.reached(point[metric.key], target):
            return float(point["train_time_s"])
    return None


def plot_accuracy(
    out: Path, curves: dict[str, list[dict[str, Any]]], target: float | None, metric: Metric = ACCURACY
) -> None:
    """``accuracy_vs_time.png`` (a denoiser's: ``loss_vs_time.png``): ``metric`` against training time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for label, log in curves.items():
        ax.plot([p["train_time_s"] for p in log], [p[metric.key] for p in log], marker="o", label=label)
    if target is not None:
        ax.axhline(target, color="grey", linestyle="--", linewidth=1, label=f"target {target:.3f}")
    ax.set_xlabel("training wall-clock (s, evaluation excluded)")
    ax.set_ylabel(metric.label)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / plot_name(metric), dpi=120)
    plt.close(fig)


def plot_name(metric: Metric) -> str:
    return "accuracy_vs_time.png" if metric is ACCURACY else "loss_vs_time.png"
