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

from layerpar.config import RunConfig, load_config
from layerpar.errors import ConfigError, LaunchError, LayerparError, WorkerError
from layerpar.parallel.comm import TorchDistComm, close_process_group, init_process_group
from layerpar.parallel.layout import Layout
from layerpar.parallel.objective import objective_from
from layerpar.parallel.parent_death import DIE_WITH_PARENT_ENV, die_with_parent
from layerpar.parallel.run import load_run_data
from layerpar.parallel.runner import DistributedRunner
from layerpar.parallel.session import RunSession
from layerpar.parallel.setup import build_setup, distributed_bounds, make_worker, resolve_device

log = logging.getLogger(__name__)

ENV_CONTRACT = ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK")
RESTART_COUNT_ENVS = ("TORCHELASTIC_RESTART_COUNT", "SLURM_RESTART_COUNT")


def read_env() -> tuple[int, int, int]:
    missing = [name for name in ENV_CONTRACT if name not in os.environ]
    if missing:
        raise LaunchError(
            f"worker started without {missing}: start workers through `layerpar launch` "
            "(or torchrun / srun / mpirun with a layerpar cluster config), which set them"
        )
    return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"])


def check_one_process_only(config: RunConfig) -> None:
    """Refuse what only the in-process trainer can run, before any process group forms."""
    if config.layerpar.oracle is not None and config.train.mode != "serial":
        raise ConfigError(
            f"layerpar.oracle={config.layerpar.oracle} is an ablation of the in-process trainer: its "
            "serial pass needs every module's weights in one process.  Run `layerpar train` without "
            "--cluster (the in-process trainer), or set layerpar.oracle=null"
        )


def backend_for(config: RunConfig, device: torch.device) -> str:
    if config.parallel.backend != "auto":
        return config.parallel.backend
    return "nccl" if device.type == "cuda" else "gloo"


def run_worker(config: RunConfig, resume: bool | str = False) -> dict[str, Any] | None:
    """Train this rank's module; rank 0 returns the run summary, other ranks None.  ``resume``
    "auto": continue from the newest complete checkpoint set if there is one (a restart)."""
    check_one_process_only(config)
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
        # An error raised on purpose (bad config, NaN loss) would recur on a restart; a lost
        # peer or connection (RuntimeError from the process group) would not.
        retryable = isinstance(error, RuntimeError) and not isinstance(error, LayerparError)
        message = f"{type(error).__name__}: {error}\n{traceback.format_exc()}"
        # The finished frames hold the comm and its groups: clear them so the close frees them.
        traceback.clear_frames(error.__traceback__)
        raise WorkerError(message, rank, retryable=retryable) from error
    finally:
        close_process_group()


def _train(config: RunConfig, rank: int, device: torch.device, resume: bool | str) -> dict[str, Any] | None:
    layout = Layout(config.parallel.stages, config.parallel.replicas)
    comm = TorchDistComm(layout.groups())
    data = load_run_data(config)
    input_shape = data.input_shape if config.model.factory else None
    bounds = distributed_bounds(config, comm, input_shape=input_shape)
    objective = objective_from(config.train.loss, denoiser=config.is_diffusion)
    setup = build_setup(config, device, bounds, input_shape=input_shape, objective=objective)
    worker = make_worker(setup, rank, comm, data.schedule.total_steps, own_copy=False)
    summary = RunSession(config, DistributedRunner(worker, data.plan, comm), setup, data).fit(resume)
    return summary.record if summary is not None else None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="layerpar worker (one rank; started by a launcher)")
    parser.add_argument("--config", default=None)
    parser.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE")
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        format=f"%(asctime)s rank{os.environ.get('RANK', '?')} %(levelname)s %(name)s: %(message)s",
    )
    if os.environ.get(DIE_WITH_PARENT_ENV) == "1":
        die_with_parent()
    config = load_config(args.config, args.overrides)
    # torchrun --max-restarts starts the ranks again after a failure, Slurm a requeued job:
    # go on from the newest complete checkpoint set.
    restarted = any(int(os.environ.get(name) or 0) > 0 for name in RESTART_COUNT_ENVS)
    run_worker(config, resume=True if args.resume else ("auto" if restarted else False))


if __name__ == "__main__":
    main()
