"""Fault drill: inject real faults into real runs and time what happens.

    .venv/bin/python scripts/fault_drill.py --out results/reliability/drill.json

Each fault runs the same small layer-parallel job (digits, ResNet-20, K = 2, pipelined, float64,
a checkpoint set every 4 batches) and records, from this process's clock:

* detection: signal sent -> the launcher names the failure (summary.json's ``restarts``);
* extra wall time: the faulted run's wall time minus an uninterrupted run's (same launcher);
* for a killed driver: signal sent -> the last worker process gone.

The same faults are asserted (not timed) by tests/integration/test_faults.py and
tests/integration/test_launch_slurm.py; docs/reliability.md's table is generated from the JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from layerpar.config import load_config  # noqa: E402
from layerpar.launchers import launch_training, load_cluster_config  # noqa: E402
from layerpar.parallel.run import environment  # noqa: E402
from tests.helpers.faults import (  # noqa: E402
    alive,
    cmdline,
    descendants,
    first_manifest,
    kill,
    ray_actor_pids,
    spawned_workers,
    wait_for,
)

RUN = [
    "layerpar.method=pipelined", "layerpar.warmup_epochs=0", "layerpar.serial_final_epochs=0",
    "data.train_limit=640", "train.batch_size=32", "train.epochs=3", "train.dtype=float64",
    "train.progress=false", "parallel.timeout_s=8", "checkpoint.every_steps=4", "checkpoint.every_min=null",
]  # fmt: skip
CLUSTERS = {name: ROOT / "cluster_configs" / f"{name}.yaml" for name in ("local_cpu", "ray_local", "torchrun")}


def _config(out: Path, name: str, *extra: str) -> Any:
    return load_config(ROOT / "configs" / "digits_tiny.yaml", [*RUN, f"train.out_dir={out}", f"train.run_name={name}", *extra])


def _timed_run(out: Path, name: str, cluster: str, fault: Any = None) -> dict[str, Any]:
    """One run in a thread; ``fault(run_dir)`` (in this thread) injects the fault and returns
    the time it was sent."""
    config = _config(out, name)
    spec = dataclasses.replace(load_cluster_config(CLUSTERS[cluster]), max_restarts=2)
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            result["record"] = launch_training(config, spec)
        except BaseException as error:  # noqa: BLE001 - reported in the JSON
            result["error"] = f"{type(error).__name__}: {str(error).splitlines()[0]}"

    started = time.monotonic()
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    sent = fault(out / name) if fault is not None else None
    thread.join(timeout=600)
    wall = time.monotonic() - started
    record = result.get("record") or {}
    restarts = record.get("restarts", [])
    return {
        "wall_s": wall,
        "ok": "record" in result,
        "error": result.get("error"),
        "restarts": restarts,
        "detected_s": restarts[0]["detected_unix"] - sent if (restarts and sent) else None,
        "final_test_acc": record.get("final_test_acc"),
    }


def _kill_when_checkpointed(find: Any, sig: int = signal.SIGKILL) -> Any:
    def fault(run_dir: Path) -> float:
        wait_for(lambda: first_manifest(run_dir / "checkpoint"), 180, "the first checkpoint set")
        return kill(wait_for(find, 60, "a worker"), sig)

    return fault


def _local_rank1() -> int | None:
    workers = spawned_workers(os.getpid())
    return workers[1] if len(workers) == 2 else None


def _torchrun_rank() -> int | None:
    ranks = [
        p
        for p in descendants(os.getpid())
        if "layerpar.launchers.torchrun" in cmdline(p) and "torch.distributed.run" not in cmdline(p)
    ]
    return ranks[-1] if len(ranks) == 2 else None


def _killed_driver(out: Path, sig: int) -> dict[str, Any]:
    sets = [f"--set={s}" for s in [*RUN, "train.epochs=50", f"train.out_dir={out}", f"train.run_name=driver-{sig}"]]
    command = [sys.executable, "-m", "layerpar", "train", "--config", str(ROOT / "configs" / "digits_tiny.yaml"),
               "--cluster", str(CLUSTERS["local_cpu"]), *sets]  # fmt: skip
    driver = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: len(spawned_workers(driver.pid)) == 2, 120, "two workers")
    wait_for(lambda: (out / f"driver-{sig}" / "metrics.jsonl").is_file(), 120, "training to start")
    everything = descendants(driver.pid)
    sent = kill(driver.pid, sig)
    driver.wait(timeout=60)
    wait_for(lambda: not any(alive(p) for p in everything), 30, "every worker to exit")
    return {"ok": True, "all_gone_s": time.time() - sent, "processes": len(everything)}


def _nan(out: Path) -> dict[str, Any]:
    sets = [f"--set={s}" for s in [*RUN, "optim.lr=1e6", "train.dtype=float32", f"train.out_dir={out}", "train.run_name=nan"]]
    command = [sys.executable, "-m", "layerpar", "train", "--config", str(ROOT / "configs" / "digits_tiny.yaml"),
               "--cluster", str(CLUSTERS["local_cpu"]), *sets]  # fmt: skip
    started = time.monotonic()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    message = next((line for line in done.stderr.splitlines() if "non-finite" in line), "")
    return {"ok": done.returncode == 2, "exit_code": done.returncode, "wall_s": time.monotonic() - started,
            "message": message.strip()[:300], "model_pt_written": (out / "nan" / "model.pt").exists()}  # fmt: skip


def drill(out: Path) -> list[dict[str, Any]]:
    faults: list[dict[str, Any]] = []

    def add(name: str, launcher: str, measured: dict[str, Any], **extra: Any) -> None:
        faults.append({"fault": name, "launcher": launcher, **measured, **extra})
        print(json.dumps(faults[-1]), flush=True)

    for cluster, find in (("local_cpu", _local_rank1), ("ray_local", lambda: (ray_actor_pids() or [None])[-1]),
                          ("torchrun", _torchrun_rank)):  # fmt: skip
        clean = _timed_run(out, f"clean-{cluster}", cluster)
        killed = _timed_run(out, f"killed-{cluster}", cluster, _kill_when_checkpointed(find))
        add("SIGKILL of one worker", cluster, killed, extra_wall_s=killed["wall_s"] - clean["wall_s"],
            clean_wall_s=clean["wall_s"])  # fmt: skip
    stopped = _timed_run(out, "stopped-local", "local_cpu", _kill_when_checkpointed(_local_rank1, signal.SIGSTOP))
    add("SIGSTOP of one worker (parallel.timeout_s=8)", "local_cpu", stopped)
    add("SIGTERM of the driver", "local_cpu", _killed_driver(out, signal.SIGTERM))
    add("SIGKILL of the driver", "local_cpu", _killed_driver(out, signal.SIGKILL))
    add("NaN loss (optim.lr=1e6)", "local_cpu", _nan(out))
    return faults


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "reliability" / "drill.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="layerpar-drill-") as scratch:
        faults = drill(Path(scratch))
    record = {**environment(), "command": shlex.join(["python", "scripts/fault_drill.py", *sys.argv[1:]]),
              "faults": faults}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    tmp.replace(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
