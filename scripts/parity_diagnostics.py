"""Where does layer-parallel accuracy come from?  Ablations of the parallel steps (docs/parity.md).

Diagnostics, not product options: they switch parts of the layer-parallel step off by wrapping
``StageWorker`` methods, on the 20k Fashion-MNIST screen (ResNet-20, 3 epochs, K = 2, seed 0,
in-process trainer on the CPU; the same numbers as K processes).

    python scripts/parity_diagnostics.py [--only name,...] [--out results/parity]

  --freeze early   modules k < K take no update in layer-parallel steps
  --freeze all     no module takes an update in layer-parallel steps (only serial steps train)
  --h-target       the AuxNet is distilled on the true h_k instead of the AL target λ⁺

One JSON per run (``diag-<name>-fmnist20k-K2-s0.json``), like scripts/parity_sweep.py's.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from layerpar.config import load_config
from layerpar.parallel import stage
from layerpar.parallel.methods import penalty
from layerpar.parallel.trainer import LayerParallelTrainer

BASE = ["data.dataset=fashion_mnist", "data.train_limit=20000", "model.name=resnet20", "train.epochs=3",
        "train.batch_size=128", "parallel.stages=2", "parallel.balance=blocks", "train.progress=false"]

RUNS: dict[str, tuple[str, bool, list[str]]] = {
    # name: (freeze, AuxNet on true h, overrides)
    "al": ("none", False, []),
    "al-freeze-early": ("early", False, []),
    "al-freeze-early-htarget": ("early", True, []),
    "al-every2": ("none", False, ["layerpar.serial_every=2"]),
    "al-every2-freeze-early": ("early", False, ["layerpar.serial_every=2"]),
    "every2-freeze-all": ("all", False, ["layerpar.serial_every=2"]),
    "delayed-every2": ("none", False, ["layerpar.method=delayed", "layerpar.serial_every=2"]),
    "delayed-b1e-4": ("none", False, ["layerpar.method=delayed", "layerpar.beta=0.0001"]),
}


def install(freeze: str, h_target: bool) -> None:
    """Wrap the stage worker for one run (each run is a fresh process: see main)."""
    update = stage.StageWorker.finish_stage_update

    def finish_stage_update(self: stage.StageWorker) -> None:
        frozen = freeze == "all" or (freeze == "early" and not self.is_last)
        if frozen and not self.state.serial:
            self.optimizer.zero_grad(set_to_none=True)  # SGD skips parameters without a gradient
        update(self)

    stage.StageWorker.finish_stage_update = finish_stage_update  # type: ignore[method-assign]
    if h_target:
        penalty.al_targets = lambda h, m, v, beta, clip=None: (h, v)  # type: ignore[assignment]


def run(name: str, out: Path) -> None:
    freeze, h_target, overrides = RUNS[name]
    install(freeze, h_target)
    torch.set_num_threads(2)
    config = load_config(None, BASE + overrides + ["train.out_dir=/tmp/parity-diag", f"train.run_name={name}"])
    start = time.time()
    summary = LayerParallelTrainer(config).fit()
    record = {
        "dataset": config.data.dataset, "model": config.model.name, "arm": f"diag-{name}", "stages": 2,
        "seed": config.train.seed, "epochs": config.train.epochs, "train_limit": config.data.train_limit,
        "freeze": freeze, "aux_on_true_h": h_target, "final_test_acc": summary.final_test_acc,
        "epochs_log": summary.record["epochs_log"], "wall_s": time.time() - start, "device": "cpu",
        "config": config.to_dict(), "git_commit": summary.record.get("git_commit"),
        "command": f"python scripts/parity_diagnostics.py --only {name}",
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / f"diag-{name}-fmnist20k-K2-s0.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"{name}: acc={summary.final_test_acc:.4f} epochs={[round(e['test_acc'], 4) for e in summary.record['epochs_log']]}",
          flush=True)


def main() -> None:
    import subprocess
    import sys

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", help="comma list of runs (default: all)")
    parser.add_argument("--out", default="results/parity")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one in this process
    args = parser.parse_args()
    if args.one:
        run(args.one, Path(args.out))
        return
    names = args.only.split(",") if args.only else list(RUNS)
    unknown = [n for n in names if n not in RUNS]
    if unknown:
        parser.error(f"unknown runs {unknown}; valid: {', '.join(RUNS)}")
    for name in names:  # one process per run: the wrappers must not stack
        subprocess.run([sys.executable, __file__, "--one", name, "--out", args.out], check=True)


if __name__ == "__main__":
    main()
