"""Accuracy-parity study (issue: layer-parallel reaches serial accuracy).

Accuracy does not depend on where the modules run (the in-process trainer is bit-identical to K
processes), so this runs the in-process trainer on whatever device is present (GPU if any).

Stage 1 screens the levers of DESIGN.md §2 on 20k Fashion-MNIST images, ResNet-20, K=2,
3 epochs, one seed; stage 2 takes the best layer-parallel variant (highest test accuracy) and
runs it with 3 seeds on the full data at K=2 and K=4 next to serial backprop.

    python scripts/parity_sweep.py --stage 1 --out results/parity
    python scripts/parity_sweep.py --stage 2 --out results/parity --variant <name> \
        [--seeds 0,1,2] [--datasets fashion_mnist,mnist] [--model resnet56] [--stages 4]

Every run writes one JSON object to --out (dataset, model, arm, stages, seed, epochs,
final_test_acc, time_to_target_s (filled by the table script), config, git commit).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from layerpar.config import load_config
from layerpar.parallel.trainer import LayerParallelTrainer, SerialTrainer

SCREEN_BASE = [
    "data.dataset=fashion_mnist", "data.train_limit=20000", "model.name=resnet20",
    "train.epochs=3", "train.batch_size=128", "parallel.stages=2", "parallel.balance=blocks",
    "train.progress=false", "train.eval_every=1",
]

SCRATCH = f"/tmp/parity/{time.strftime('%Y%m%d-%H%M%S')}"

VARIANTS: dict[str, list[str]] = {
    # The parallel phase alone (no serial epochs), for the update-cosine diagnosis.
    "al-b0.01-parallel": ["layerpar.method=al", "layerpar.beta=0.01", "layerpar.warmup_epochs=0",
                          "layerpar.serial_final_epochs=0"],
    "al-b0.01-parallel-K4": ["layerpar.method=al", "layerpar.beta=0.01", "layerpar.warmup_epochs=0",
                             "layerpar.serial_final_epochs=0", "parallel.stages=4"],
    "penalty-b0.01-parallel": ["layerpar.method=penalty", "layerpar.beta=0.01", "layerpar.warmup_epochs=0",
                               "layerpar.serial_final_epochs=0"],
    "serial": ["train.mode=serial"],
}
# Oracle ablations of the parallel phase (issue 11, layerpar.oracle): the true multipliers (a),
# the true states (b) or both (c, serial backprop) in place of the AuxNet's, K = 2 and 4.
for _part in ("multipliers", "states", "both"):
    for _k in (2, 4):
        VARIANTS[f"al-b0.01-parallel-oracle-{_part}" + ("-K4" if _k == 4 else "")] = [
            *VARIANTS["al-b0.01-parallel"], f"layerpar.oracle={_part}", f"parallel.stages={_k}"]
VARIANTS |= {
    "al-b0.01": ["layerpar.method=al", "layerpar.beta=0.01"],
    "al-b0.001": ["layerpar.method=al", "layerpar.beta=0.001"],
    "al-b0.1": ["layerpar.method=al", "layerpar.beta=0.1"],
    "penalty-b0.01": ["layerpar.method=penalty", "layerpar.beta=0.01"],
    "penalty-b0.1": ["layerpar.method=penalty", "layerpar.beta=0.1"],
    "al-b0.01-clip0.1": ["layerpar.beta=0.01", "layerpar.al_step_clip=0.1"],
    "al-b0.01-aux16x2": ["layerpar.beta=0.01", "aux.width=16", "aux.blocks_per_stage=2"],
    "al-b0.01-auxlr3e-3": ["layerpar.beta=0.01", "aux.lr=0.003"],
    "al-b0.01-cont1": ["layerpar.beta=0.01", "layerpar.beta_final=1.0"],
    "al-b0.01-hybrid0.5": ["layerpar.beta=0.01", "layerpar.serial_final_epochs=0.5"],
    "al-b0.01-nowarmup": ["layerpar.beta=0.01", "layerpar.warmup_epochs=0"],
    "al-b0.01-nobnre": ["layerpar.beta=0.01", "layerpar.bn_reestimate_batches=0"],
    "penalty-b0.01-hybrid0.5": ["layerpar.method=penalty", "layerpar.beta=0.01", "layerpar.serial_final_epochs=0.5"],
    "al-b0.01-cont1-hybrid0.5": ["layerpar.beta=0.01", "layerpar.beta_final=1.0", "layerpar.serial_final_epochs=0.5"],
    "al-b0.01-aux16x2-hybrid0.5": ["layerpar.beta=0.01", "aux.width=16", "aux.blocks_per_stage=2",
                                   "layerpar.serial_final_epochs=0.5"],
    "al-b0.01-warmup0.5-hybrid1": ["layerpar.beta=0.01", "layerpar.warmup_epochs=0.5", "layerpar.serial_final_epochs=1.0"],
    "al-b0.001-clip0.1-hybrid0.5": ["layerpar.beta=0.001", "layerpar.al_step_clip=0.1", "layerpar.serial_final_epochs=0.5"],
    # Periodic serial steps inside the parallel phase.
    "al-b0.01-every2-hybrid0.5": ["layerpar.beta=0.01", "layerpar.serial_every=2", "layerpar.serial_final_epochs=0.5"],
    "al-b0.01-every4-hybrid0.5": ["layerpar.beta=0.01", "layerpar.serial_every=4", "layerpar.serial_final_epochs=0.5"],
    # Stale-adjoint variant (parallel/methods/delayed.py): the true adjoint of the same batch, K−1−k steps late.
    "delayed-b0.01-hybrid0.5": ["layerpar.method=delayed", "layerpar.beta=0.01", "layerpar.warmup_epochs=1",
                                "layerpar.serial_final_epochs=0.5"],
    "delayed-b0.01": ["layerpar.method=delayed", "layerpar.beta=0.01", "layerpar.warmup_epochs=1",
                      "layerpar.serial_final_epochs=0"],
    "delayed-b0.03-hybrid0.5": ["layerpar.method=delayed", "layerpar.beta=0.03", "layerpar.warmup_epochs=1",
                                "layerpar.serial_final_epochs=0.5"],
    "delayed-b0.1-hybrid0.5": ["layerpar.method=delayed", "layerpar.beta=0.1", "layerpar.warmup_epochs=1",
                               "layerpar.serial_final_epochs=0.5"],
    "delayed-b1-hybrid0.5": ["layerpar.method=delayed", "layerpar.beta=1", "layerpar.warmup_epochs=1",
                             "layerpar.serial_final_epochs=0.5"],
    "delayed-b0.1": ["layerpar.method=delayed", "layerpar.beta=0.1", "layerpar.warmup_epochs=1",
                     "layerpar.serial_final_epochs=0"],
    "al-b0.01-aux16x2-stride2-hybrid0.5": ["layerpar.beta=0.01", "aux.width=16", "aux.blocks_per_stage=2",
                                           "aux.stem_stride=2", "layerpar.serial_final_epochs=0.5"],
    "delayed-b0.1-aux16x2-stride2-hybrid0.5": ["layerpar.method=delayed", "layerpar.beta=0.1", "aux.width=16",
                                               "aux.blocks_per_stage=2", "aux.stem_stride=2",
                                               "layerpar.serial_final_epochs=0.5"],
    "delayed-b0.01-w0.25": ["layerpar.method=delayed", "layerpar.beta=0.01", "layerpar.warmup_epochs=0.25",
                            "layerpar.serial_final_epochs=0"],
    # Pipelined variant (parallel/methods/pipelined.py): true inputs one step late, true adjoints
    # 2(K−1−k) steps late; no AuxNet in the parallel steps, so no warm-up is needed.
    "pipelined": ["layerpar.method=pipelined", "layerpar.accumulate=1", "layerpar.warmup_epochs=0", "layerpar.serial_final_epochs=0"],
    "pipelined-hybrid0.5": ["layerpar.method=pipelined", "layerpar.accumulate=1", "layerpar.warmup_epochs=0",
                            "layerpar.serial_final_epochs=0.5"],
    "pipelined-predict": ["layerpar.method=pipelined", "layerpar.accumulate=1", "layerpar.warmup_epochs=0",
                          "layerpar.serial_final_epochs=0", "layerpar.predict_weights=true"],
    "pipelined-predict-K4": ["layerpar.method=pipelined", "layerpar.accumulate=1", "layerpar.warmup_epochs=0",
                             "layerpar.serial_final_epochs=0", "layerpar.predict_weights=true", "parallel.stages=4"],
    "pipelined-w0.5-K4": ["layerpar.method=pipelined", "layerpar.accumulate=1", "layerpar.warmup_epochs=0.5",
                          "layerpar.serial_final_epochs=0", "parallel.stages=4"],
    "pipelined-mom-K4": ["layerpar.method=pipelined", "layerpar.accumulate=1", "layerpar.warmup_epochs=0",
                         "layerpar.serial_final_epochs=0", "layerpar.compensate_momentum=true", "parallel.stages=4"],
    "pipelined-mom": ["layerpar.method=pipelined", "layerpar.accumulate=1", "layerpar.warmup_epochs=0",
                      "layerpar.serial_final_epochs=0", "layerpar.compensate_momentum=true"],
    # PipeDream-2BW-style: gradients accumulated over micro-batches, so they are at most
    # ceil(2(K−1−k)/accumulate) weight versions old (same global batch of 128 per update).
    "pipelined-acc2": ["layerpar.method=pipelined", "layerpar.warmup_epochs=0", "layerpar.serial_final_epochs=0",
                       "layerpar.accumulate=2"],
    "pipelined-acc4-K4": ["layerpar.method=pipelined", "layerpar.warmup_epochs=0", "layerpar.serial_final_epochs=0",
                          "layerpar.accumulate=4", "parallel.stages=4"],
    "pipelined-acc8-K4": ["layerpar.method=pipelined", "layerpar.warmup_epochs=0", "layerpar.serial_final_epochs=0",
                          "layerpar.accumulate=8", "parallel.stages=4"],
    # The default micro-batch count: the smallest power of two >= 2(K−1).
    "pipelined-2bw": ["layerpar.method=pipelined", "layerpar.warmup_epochs=0", "layerpar.serial_final_epochs=0"],
    "pipelined-K4": ["layerpar.method=pipelined", "layerpar.accumulate=1", "layerpar.warmup_epochs=0", "layerpar.serial_final_epochs=0",
                     "parallel.stages=4"],
}
# Predict, then correct (parallel/methods/corrected.py, issue 11): the pipelined method plus a local
# head per boundary that predicts the adjoint at once (linear: the fitted mean Jacobian applied to
# the head's label error; grad: the head's own input gradient), scaled by the calibration,
# corrected by the true adjoint when it arrives; "local": the head's term kept, not corrected.
for _k in (2, 4):
    _suffix = "-K4" if _k == 4 else ""
    _base = ["layerpar.method=corrected", "layerpar.warmup_epochs=0", "layerpar.serial_final_epochs=0",
             f"parallel.stages={_k}"]
    for _predictor, _short in (("linear", "lin"), ("gradient", "grad")):
        _with = [*_base, f"layerpar.predictor={_predictor}"]
        VARIANTS[f"corrected-{_short}{_suffix}"] = _with
        for _m in (1, 2):
            VARIANTS[f"corrected-{_short}-acc{_m}{_suffix}"] = [*_with, f"layerpar.accumulate={_m}"]
        _local = [*_with, "layerpar.correct=false", "layerpar.predictor_scale=1"]
        VARIANTS[f"local-{_short}-c1{_suffix}"] = _local
        # Fewer micro-batches per update (staler weights): what the heads buy, if anything.
        for _m in (1, 2):
            VARIANTS[f"local-{_short}-c1-acc{_m}{_suffix}"] = [*_local, f"layerpar.accumulate={_m}"]
        # The head's term applied with the delayed adjoint (one backward per micro-batch).
        VARIANTS[f"local-{_short}-c1-dly{_suffix}"] = [*_local, "layerpar.head_term=delayed"]
        VARIANTS[f"local-{_short}-c1-dly-acc2{_suffix}"] = [*_local, "layerpar.head_term=delayed", "layerpar.accumulate=2"]
VARIANTS["pipelined-acc2-K4"] = [*VARIANTS["pipelined-2bw"], "layerpar.accumulate=2", "parallel.stages=4"]

STEP_METRICS = ("predictor_cosine/", "prediction_update_cosine/", "predictor_scale/", "head_loss/", "weight_staleness/")
"""Per-step metrics whose epoch means a record keeps (``step_metric_means``)."""


def step_metric_means(metrics_path: Path, steps_per_epoch: int) -> list[dict[str, float]]:
    """Per epoch, the mean of every ``STEP_METRICS`` key over that epoch's steps (metrics.jsonl)."""
    sums: dict[int, dict[str, list[float]]] = {}
    for line in metrics_path.read_text().splitlines():
        record = json.loads(line)
        if record.get("kind") != "step":
            continue
        epoch = record["step"] // steps_per_epoch
        for key, value in record.items():
            if key.startswith(STEP_METRICS) and isinstance(value, float):
                sums.setdefault(epoch, {}).setdefault(key, []).append(value)
    return [{key: sum(v) / len(v) for key, v in sums[e].items()} for e in sorted(sums)]


def run_one(name: str, overrides: list[str], out: Path, tag: str) -> dict:
    # A fresh scratch folder per invocation: a run folder is never reused (it would be refused).
    config = load_config(None, overrides + [f"train.out_dir={SCRATCH}", f"train.run_name={tag}"])
    start = time.time()
    if CLUSTER:
        # K worker processes (one thread each) instead of the in-process trainer: the same
        # numbers, and on a CPU machine K cores at work.
        from layerpar.launchers import launch_training
        from layerpar.launchers.cluster import load_cluster_config

        summary = _Summary(launch_training(config, load_cluster_config(CLUSTER)))
    else:
        trainer_cls = SerialTrainer if config.train.mode == "serial" else LayerParallelTrainer
        summary = trainer_cls(config).fit()
    record = {
        "dataset": config.data.dataset,
        "model": config.model.name,
        "arm": "serial" if config.train.mode == "serial" else f"layerpar-{name}",
        "stages": 1 if config.train.mode == "serial" else config.parallel.stages,
        "seed": config.train.seed,
        "epochs": config.train.epochs,
        "train_limit": config.data.train_limit,
        "final_test_acc": summary.final_test_acc,
        "epochs_log": summary.record["epochs_log"],
        "step_metric_means": _step_means(config, summary),
        "train_time_s": summary.train_time_s,
        "wall_s": time.time() - start,
        "device": summary.record.get("cuda") or "cpu",
        "time_to_target_s": None,
        "config": config.to_dict(),
        "git_commit": summary.record.get("git_commit"),
        "command": "python scripts/parity_sweep.py " + " ".join(ARGS),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{tag}.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"{tag}: acc={summary.final_test_acc:.4f} time={record['wall_s']:.1f}s", flush=True)
    return record


def _step_means(config, summary) -> list[dict[str, float]]:
    run_dir = Path(config.train.out_dir) / config.train.run_name
    epochs = summary.record["epochs_log"]
    if not (run_dir / "metrics.jsonl").exists() or not epochs:
        return []
    return step_metric_means(run_dir / "metrics.jsonl", int(epochs[0]["step"] / epochs[0]["epoch"]))


class _Summary:
    """The fields of a RunSummary that run_one reads, from a launcher's summary record."""

    def __init__(self, record: dict) -> None:
        self.record = record
        self.final_test_acc = record["final_test_acc"]
        self.train_time_s = record["train_time_s"]


def stage1(out: Path, only: list[str] | None = None, prefix: str = "screen", seed: int = 0) -> None:
    for name, extra in VARIANTS.items():
        if only and name not in only:
            continue
        run_one(name, SCREEN_BASE + extra + [f"train.seed={seed}"], out, f"{prefix}-{name}-fmnist20k-K2-s{seed}")


def stage2(out: Path, variant: str, seeds: list[int], datasets: list[str], model: str,
           stages: list[int] | None, with_serial: bool = True) -> None:
    """Full data, 4 epochs: serial and ``variant`` per dataset and seed (MNIST only at K = 4,
    the issue's MNIST target; stages override with ``stages``)."""
    full = [f"model.name={model}", "train.epochs=4", "train.batch_size=128", "parallel.balance=blocks",
            "train.progress=false"]
    # Serial's accuracy differs between CPU and GPU numerics by more than between seeds (0.5 pt
    # on one seed): every layer-parallel run is compared with serial on the same kind of device.
    where = "" if torch.cuda.is_available() else "-cpu"
    for dataset in datasets:
        for seed in seeds:
            base = full + [f"data.dataset={dataset}", f"train.seed={seed}"]
            if with_serial:
                run_one("serial", base + VARIANTS["serial"], out, f"full-serial-{model}-{dataset}-K1-s{seed}{where}")
            for k in stages or ((4,) if dataset == "mnist" else (2, 4)):
                run_one(variant, base + VARIANTS[variant] + [f"parallel.stages={k}"], out,
                        f"full-{variant}-{model}-{dataset}-K{k}-s{seed}{where}")


ARGS: list[str] = []
CLUSTER: str | None = None

if __name__ == "__main__":
    import sys

    ARGS[:] = sys.argv[1:]
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", type=int, choices=(1, 2), required=True)
    parser.add_argument("--out", default="results/parity")
    parser.add_argument("--variant", default="al-b0.01-hybrid0.5")
    parser.add_argument("--seeds", default="0,1,2", help="comma list of seeds (stage 2)")
    parser.add_argument("--datasets", default="fashion_mnist,mnist", help="comma list (stage 2)")
    parser.add_argument("--model", default="resnet20", help="backbone (stage 2)")
    parser.add_argument("--stages", help="comma list of K (stage 2; default 2,4 on Fashion-MNIST, 4 on MNIST)")
    parser.add_argument("--skip-serial", action="store_true", help="stage 2: layer-parallel runs only")
    parser.add_argument("--only", help="comma list of variants (stage 1)")
    parser.add_argument("--prefix", default="screen", help="file name prefix of stage-1 runs")
    parser.add_argument("--seed", type=int, default=0, help="seed of the stage-1 runs")
    parser.add_argument("--cluster", help="run through a cluster config (e.g. cluster_configs/local_cpu.yaml)")
    args = parser.parse_args()
    torch.backends.cudnn.benchmark = True
    CLUSTER = args.cluster
    if args.stage == 1:
        stage1(Path(args.out), args.only.split(",") if args.only else None, args.prefix, args.seed)
    else:
        stage2(Path(args.out), args.variant, [int(s) for s in args.seeds.split(",")], args.datasets.split(","),
               args.model, [int(k) for k in args.stages.split(",")] if args.stages else None, not args.skip_serial)
