"""What rank 0 records about a run: metrics.jsonl, a progress bar, summary.json."""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

log = logging.getLogger(__name__)


def default_run_name(config: Any) -> str:
    """``<method>-K<k>-<model>-<dataset>-s<seed>-<time>``, made unique in ``train.out_dir``.

    The method is in the name and a taken name gets a counter, because two runs started in the
    same second (a script that trains serial, then pipelined, then al) must not share a folder."""
    mode = config.train.mode
    layer_parallel = mode == "layerpar"
    k = config.parallel.stages if layer_parallel else 1
    method = config.layerpar.method if layer_parallel else mode
    stamp = time.strftime("%Y%m%d-%H%M%S")
    name = f"{method}-K{k}-{config.model.name}-{config.data.dataset}-s{config.train.seed}-{stamp}"
    out_dir = Path(config.train.out_dir)
    taken, counter = name, 1
    while (out_dir / taken).exists():
        counter += 1
        taken = f"{name}-{counter}"
    return taken


class RunRecorder:
    """Appends step and epoch records to ``metrics.jsonl`` and drives the progress bar."""

    def __init__(self, run_dir: Path, total_steps: int, start_step: int = 0, progress: bool = True) -> None:
        self.run_dir = run_dir
        run_dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path = run_dir / "metrics.jsonl"
        self._file = self.metrics_path.open("a")
        self.bar = tqdm(
            total=total_steps,
            initial=start_step,
            disable=not progress,
            unit="step",
            dynamic_ncols=True,
            leave=True,
        )
        self.last: dict[str, Any] = {}

    def _write(self, record: dict[str, Any]) -> None:
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
        self._file.write(json.dumps(clean) + "\n")
        self._file.flush()

    def step(self, record: dict[str, Any]) -> None:
        self._write({"kind": "step", **record})
        self.last = record
        self.bar.update(1)
        postfix = {
            "loss": record.get("loss"),
            "acc": record.get("acc"),
            "samples/s": record.get("samples_per_s"),
        }
        self.bar.set_postfix({k: f"{v:.3g}" for k, v in postfix.items() if v is not None}, refresh=False)

    def epoch(self, record: dict[str, Any]) -> None:
        self._write({"kind": "epoch", **record})
        # A classifier's headline is its accuracy; a denoiser's (or a user loss's) the test loss.
        key = "test_acc" if "test_acc" in record else "test_loss"
        log.info(
            "epoch %.2f step %d %s %.4f train_time_s %.1f",
            record["epoch"],
            record["step"],
            key,
            record[key],
            record["train_time_s"],
        )
        self.bar.set_description(f"{key.replace('_', ' ')} {record[key]:.4f}")

    def close(self) -> None:
        self.bar.close()
        self._file.close()


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    tmp.replace(path)
