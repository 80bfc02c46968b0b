"""Ray coordinator: one actor per worker in a placement group; the actors form the
torch.distributed group themselves and run the ordinary worker entry point.

    layerpar train --config configs/demo.yaml --cluster cluster_configs/ray_local.yaml

The worker is a plain class (``RayWorker``), wrapped by ``ray.remote`` only here.  Actors,
placement group and a Ray this launcher started are cleaned up on success, error and Ctrl-C.
"""

from __future__ import annotations

import os
import socket
from typing import Any

from layerpar.config import RunConfig
from layerpar.errors import LaunchError, WorkerError
from layerpar.launchers.cluster import ClusterConfig
from layerpar.launchers.env import contract, free_port


class RayWorker:
    """Runs one rank inside a Ray actor."""

    def address(self) -> tuple[str, int]:
        """This actor's node address and a port free on it (asked of rank 0)."""
        host = socket.gethostbyname(socket.gethostname())
        return host, free_port(host if host != "127.0.1.1" else "127.0.0.1")

    def run(self, env: dict[str, str], config: RunConfig, resume: bool) -> dict[str, Any] | None:
        os.environ.update(env)
        from layerpar.parallel.worker import run_worker

        try:
            return run_worker(config, resume=resume)
        except WorkerError:
            raise
        except Exception as error:  # noqa: BLE001 - keep the rank with the failure
            import traceback

            raise WorkerError(f"{error!r}\n{traceback.format_exc()}", int(env["RANK"])) from error


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as error:
        raise LaunchError("Ray is not installed: pip install 'layerpar[ray]'") from error
    return ray


def launch_ray(config: RunConfig, cluster: ClusterConfig, resume: bool = False) -> dict[str, Any] | None:
    """Train on Ray (a local Ray, an existing one in this process, or ``ray.address``)."""
    ray = _import_ray()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=cluster.ray.address, num_cpus=cluster.ray.num_cpus, include_dashboard=False,
                 log_to_driver=True)
    world_size = config.parallel.stages * config.parallel.replicas
    bundle = {"CPU": cluster.cpus_per_worker} | ({"GPU": 1} if cluster.gpus_per_node > 0 else {})
    from ray.util.placement_group import placement_group, remove_placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    group = placement_group([bundle] * world_size, strategy=cluster.ray.placement_strategy)
    actors: list[Any] = []
    try:
        ray.get(group.ready(), timeout=cluster.timeout_min * 60)
        remote_cls = ray.remote(RayWorker)
        for rank in range(world_size):
            strategy = PlacementGroupSchedulingStrategy(placement_group=group, placement_group_bundle_index=rank)
            actors.append(remote_cls.options(num_cpus=bundle["CPU"], num_gpus=bundle.get("GPU", 0),
                                             scheduling_strategy=strategy).remote())
        host, port = ray.get(actors[0].address.remote())
        per_node = cluster.workers_on_each_node(world_size)
        futures = [actor.run.remote(contract(host, port, rank, world_size, rank % per_node), config, resume)
                   for rank, actor in enumerate(actors)]
        return _wait_all(ray, futures)[0]
    finally:
        for actor in actors:
            ray.kill(actor)
        remove_placement_group(group)
        if started_here:
            ray.shutdown()


def _wait_all(ray: Any, futures: list[Any]) -> list[Any]:
    """Results in rank order; the first failure is raised with its rank and traceback."""
    pending = list(futures)
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        try:
            ray.get(done[0])
        except Exception as error:  # noqa: BLE001 - RayTaskError wraps the worker's exception
            cause = getattr(error, "cause", None)
            if isinstance(cause, WorkerError):
                raise WorkerError(cause.message, cause.rank) from None
            raise WorkerError(str(error), futures.index(done[0])) from None
    return ray.get(futures)
