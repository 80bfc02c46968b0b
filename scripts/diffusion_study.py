"""Quality of layer-parallel denoisers against serial backprop at equal steps (issue 12).

    python scripts/diffusion_study.py --study toy --seeds 0,1,2             # 2-D checkerboard, every arm
    python scripts/diffusion_study.py --study dit --arms serial,pipelined-K2 --seeds 0

Every arm trains the study's preset for the same epochs and batches (in one process: the
numerical reference of the distributed run), then ``layerpar.generation.denoiser_metrics``
scores its EMA weights with fixed seeds and sample counts: held-out denoising loss; SWD and MMD
with their data floor (2-D); classifier Fréchet distance and conditional accuracy (images).
Each (arm, seed) writes ``results/diffusion/<study>/<arm>-s<seed>.json`` (command, commit,
config, epoch log, metrics), and seed 0 its picture (``<arm>-s0.png``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STUDIES = {
    # preset, epochs, metric samples
    "toy": ("configs/diffusion_toy.yaml", ["train.epochs=30"], 2000),
    "dit": ("configs/diffusion_dit_mnist.yaml", [], 1000),
}
ARMS = {
    "serial": ["train.mode=serial"],
    "pipelined-K2": ["layerpar.method=pipelined", "parallel.stages=2"],
    "pipelined-K4": ["layerpar.method=pipelined", "parallel.stages=4"],
    "al-K2": ["layerpar.method=al", "parallel.stages=2"],
    "al-K4": ["layerpar.method=al", "parallel.stages=4"],
    "penalty-K2": ["layerpar.method=penalty", "parallel.stages=2"],
}
SCRATCH = ROOT / "runs" / "diffusion"
CLUSTER: str | None = None


TRAINING_CODE = ["layerpar/parallel", "layerpar/models", "layerpar/diffusion", "layerpar/generation"]


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()


def _commit() -> tuple[str, bool]:
    """HEAD, and whether the code that trains and scores differs from it (uncommitted)."""
    return _git("rev-parse", "HEAD"), bool(_git("status", "--porcelain", "--", *TRAINING_CODE))


def run_one(study: str, arm: str, seed: int, out: Path, command: str) -> dict:
    from layerpar.config import load_config
    from layerpar.generation import denoiser_metrics, draw_samples, load_denoiser, write_grid, write_scatter
    from layerpar.generation.metrics import held_out_split
    from layerpar.parallel.trainer import LayerParallelTrainer, SerialTrainer

    preset, study_overrides, n = STUDIES[study]
    tag = f"{arm}-s{seed}"
    run_dir = SCRATCH / study / f"{tag}-{int(time.time())}"
    overrides = study_overrides + ARMS[arm] + [f"train.seed={seed}", "train.progress=false"]
    config = load_config(
        ROOT / preset, overrides + [f"train.out_dir={run_dir.parent}", f"train.run_name={run_dir.name}"]
    )
    start = time.time()
    if CLUSTER and config.train.mode != "serial":
        # K worker processes, one thread each (the in-process run's numbers, K cores at work)
        from layerpar.launchers import launch_training
        from layerpar.launchers.cluster import load_cluster_config

        summary_record = launch_training(config, load_cluster_config(CLUSTER)) or {}
        train_time = float(summary_record["train_time_s"])
    else:
        trainer = SerialTrainer if config.train.mode == "serial" else LayerParallelTrainer
        result = trainer(config).fit()
        summary_record, train_time = result.record, result.train_time_s
    train_wall = time.time() - start
    loaded = load_denoiser(run_dir)
    start = time.time()
    drawn = draw_samples(loaded, n, seed=0)
    sampling_s = time.time() - start
    metrics = denoiser_metrics(loaded, n, seed=0, drawn=drawn) | {"sampling_s": sampling_s}
    commit, dirty = _commit()
    record = {
        "study": study,
        "arm": arm,
        "dataset": config.data.dataset,
        "model": config.model.name,
        "method": "serial" if config.train.mode == "serial" else config.layerpar.method,
        "stages": 1 if config.train.mode == "serial" else config.parallel.stages,
        "seed": seed,
        "epochs": config.train.epochs,
        "overrides": overrides,
        "final_test_loss": summary_record["epochs_log"][-1]["test_loss"],
        "epochs_log": summary_record["epochs_log"],
        "train_time_s": train_time,
        "where": CLUSTER or "in-process",
        "train_wall_s": train_wall,
        "metrics": metrics,
        "config": config.to_dict(),
        "git_commit": commit,
        "dirty_tree": dirty,
        "command": command,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{tag}.json").write_text(json.dumps(record, indent=2) + "\n")
    if seed == 0:
        title = f"{study} · {arm} · seed 0 · {config.train.epochs:g} epochs"
        samples = drawn[0][:100] if loaded.is_image else drawn[0]  # the metrics' own samples
        if loaded.is_image:
            write_grid(samples, out / f"{tag}.png", title=title, classes=loaded.num_classes)
        else:
            write_scatter(
                samples, held_out_split(loaded).images[: len(samples)], out / f"{tag}.png", title=title
            )
    shown = {k: round(v, 4) for k, v in metrics.items() if isinstance(v, float)}
    print(f"{study} {tag}: {shown} train {train_time:.0f}s", flush=True)
    return record


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--study", choices=sorted(STUDIES), required=True)
    parser.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated, of: {', '.join(ARMS)}")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--out", default=None, help="default results/diffusion/<study>")
    parser.add_argument("--cluster", help="train the layer-parallel arms through this cluster config")
    parser.add_argument("--skip-done", action="store_true", help="skip (arm, seed) whose JSON exists")
    args = parser.parse_args()
    arms = args.arms.split(",")
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        parser.error(f"unknown arms {unknown}; valid: {', '.join(ARMS)}")
    out = Path(args.out) if args.out else ROOT / "results" / "diffusion" / args.study
    global CLUSTER
    CLUSTER = args.cluster
    command = "python scripts/diffusion_study.py " + " ".join(sys.argv[1:])
    for seed in (int(s) for s in args.seeds.split(",")):
        for arm in arms:
            if args.skip_done and (out / f"{arm}-s{seed}.json").exists():
                continue
            run_one(args.study, arm, seed, out, command)


if __name__ == "__main__":
    main()
