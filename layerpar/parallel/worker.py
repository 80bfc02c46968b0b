"""The worker entry point every launcher ends in: one process, one module.

Contract (set by the launcher): MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE, LOCAL_RANK.
The process joins the group through ``env://``, builds the run exactly as every other rank does,
trains its module, and rank 0 writes the run folder (metrics.jsonl, summary.json, model.pt).

    python -m layerpar.parallel.worker --config configs/demo.yaml --set parallel.stages=2

is what torchrun, srun and mpirun run on every rank.
"""

from __future__ import annotations

import argparse
import logging
import os
import traceback
from typing import Any

import torch

from layerpar.checkpoint import load_checkpoint, save_atomic
from layerpar.config import RunConfig, load_config
from layerpar.errors import LaunchError, WorkerError
from layerpar.parallel.comm import TorchDistComm, close_process_group, init_process_group
from layerpar.parallel.evaluate import evaluate_chain
from layerpar.parallel.layout import Layout
from layerpar.parallel.loop import train_loop
from layerpar.parallel.recorder import RunRecorder
from layerpar.parallel.run import load_run_data, run_dir_for, write_run_config
from layerpar.parallel.runner import DistributedRunner
from layerpar.parallel.setup import build_model_for, build_setup, choose_bounds, make_worker, resolve_device
from layerpar.parallel.trainer import finish_run, model_checkpoint

log = logging.getLogger(__name__)

ENV_CONTRACT = ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK")


def read_env() -> tuple[int, int, int]:
    missing = [name for name in ENV_CONTRACT if name not in os.environ]
    if missing:
        raise LaunchError(
            f"worker started without {missing}: start workers through `layerpar launch` "
            "(or torchrun / srun / mpirun with a layerpar cluster config), which set them"
        )
    return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"])


def backend_for(config: RunConfig, device: torch.device) -> str:
    if config.parallel.backend != "auto":
        return config.parallel.backend
    return "nccl" if device.type == "cuda" else "gloo"


def run_worker(config: RunConfig, resume: bool = False) -> dict[str, Any] | None:
    """Train this rank's module; rank 0 returns the run summary, other ranks None."""
    rank, world_size, local_rank = read_env()
    Layout(config.parallel.stages, config.parallel.replicas).check_world_size(world_size)
    torch.set_num_threads(config.parallel.threads_per_worker)
    if os.environ.get("MASTER_ADDR") in ("127.0.0.1", "localhost"):
        # A loopback rendezvous: keep gloo on the loopback interface too.
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    device = resolve_device(config, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    init_process_group(backend_for(config, device), config.parallel.timeout_s)
    try:
        return _train(config, rank, device, resume)
    except Exception as error:
        raise WorkerError(f"{type(error).__name__}: {error}\n{traceback.format_exc()}", rank) from error
    finally:
        close_process_group()


def _train(config: RunConfig, rank: int, device: torch.device, resume: bool) -> dict[str, Any] | None:
    layout = Layout(config.parallel.stages, config.parallel.replicas)
    comm = TorchDistComm(layout.groups())
    bounds = None
    if rank == 0:
        model, input_shape, _ = build_model_for(config)
        bounds = choose_bounds(config, model, input_shape)
    bounds = comm.broadcast_object(bounds, src=0)
    setup = build_setup(config, device, tuple(bounds))
    data = load_run_data(config)
    worker = make_worker(setup, rank, comm, data.schedule.total_steps, own_copy=False)
    runner = DistributedRunner(worker, data.plan, comm)
    run_dir = run_dir_for(config)
    if resume:
        worker.load_state_dict(load_checkpoint(run_dir / "checkpoint" / f"rank{rank}.pt"))
    recorder = None
    if rank == 0:
        write_run_config(run_dir, config)
        recorder = RunRecorder(run_dir, data.schedule.total_steps, worker.step, progress=config.train.progress)
    try:
        result = train_loop(
            runner, data.schedule, data.plan.steps_per_epoch, data.plan.step_samples,
            lambda: evaluate_chain(worker, data.test, data.bn_images), recorder,
            eval_every=config.train.eval_every, stop_at_step=config.loop_steps("stop_at_step"),
            eval_every_steps=config.loop_steps("eval_every_steps"),
        )
    finally:
        if recorder is not None:
            recorder.close()
    save_atomic(worker.state_dict(), run_dir / "checkpoint" / f"rank{rank}.pt")
    module_state = {k: v.cpu() for k, v in worker.module.state_dict().items()}
    states = comm.gather_object(module_state if worker.replica == 0 else None, dst=0)
    total_bytes = comm.gather_object(comm.bytes_sent, dst=0)
    if rank != 0:
        return None
    assert states is not None and total_bytes is not None
    full = merge_stage_states([s for s in states if s is not None], setup.partition.bounds)
    save_atomic(model_checkpoint(config, full), run_dir / "model.pt")
    return finish_run(run_dir, config, result, setup, sum(total_bytes)).record


def merge_stage_states(states: list[dict[str, torch.Tensor]], bounds: tuple[int, ...]) -> dict[str, torch.Tensor]:
    """Stage-local ``blocks.j.*`` keys -> the whole backbone's ``blocks.(bounds[s]+j).*``."""
    merged = {}
    for stage, state in enumerate(states):
        for key, value in state.items():
            _, index, rest = key.split(".", 2)
            merged[f"blocks.{bounds[stage] + int(index)}.{rest}"] = value
    return merged


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="layerpar worker (one rank; started by a launcher)")
    parser.add_argument("--config", default=None)
    parser.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE")
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s rank{os.environ.get('RANK', '?')} %(levelname)s %(name)s: %(message)s")
    config = load_config(args.config, args.overrides)
    run_worker(config, resume=args.resume)


if __name__ == "__main__":
    main()
