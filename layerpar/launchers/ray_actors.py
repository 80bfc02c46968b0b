"""Ray launcher: one actor per worker in a placement group; the actors form the torch.distributed
group themselves and run the ordinary worker entry point.

    layerpar train --config configs/demo.yaml --cluster cluster_configs/ray_local.yaml

The driver (this process) is only the coordinator:

1. joins Ray: reuses a Ray this process already started, else ``ray.init(address=...)`` for an
   existing cluster, else starts a local Ray (``ray.num_cpus``, no dashboard);
2. reserves one bundle per worker (``{"CPU": cpus_per_worker}``, plus ``{"GPU": 1}`` when
   ``gpus_per_node > 0``) in a placement group;
3. starts one ``RayWorker`` actor per bundle: rank r in bundle r;
4. the master address is rank 0's node IP (127.0.0.1 when all actors share one node) and the
   port one that rank 0's actor found free; each actor gets the environment contract and calls
   ``run_worker`` (which joins gloo/NCCL through ``env://``);
5. waits for every rank; the first failure is raised as ``WorkerError`` with its rank and
   traceback (an actor that died is blamed, not the peer that lost its connection).  A dead
   actor restarts the whole group — new actors, a new placement group — from the newest
   complete checkpoint set, up to ``max_restarts`` times; Ray stays up in between.  Actors,
   the placement group and a Ray started here are always cleaned up (success, error, timeout
   or Ctrl-C).

Actor output (rank logs) is forwarded to the driver's terminal by Ray.  The file is not called
``ray.py`` so that ``import ray`` inside the package keeps meaning the library.
"""

from __future__ import annotations

import logging
import os
import time
import traceback
from typing import Any

from layerpar.config import RunConfig, from_dict
from layerpar.errors import LaunchError, WorkerError
from layerpar.launchers.cluster import ClusterConfig
from layerpar.launchers.env import contract, free_port
from layerpar.launchers.lifetime import run_with_restarts

log = logging.getLogger(__name__)

PLACEMENT_TIMEOUT_S = 300.0
"""How long the placement group may wait for resources (capped by timeout_min)."""
BLAME_GRACE_S = 3.0
"""After a rank reports a failure, how long to look for an actor that died (the likely cause)."""


class RayWorker:
    """One rank inside a Ray actor; a plain class (``ray.remote`` wraps it only in ``launch_ray``)."""

    def __init__(self) -> None:
        self.rank: int | None = None

    def node(self) -> tuple[str, str]:
        """(Ray node id, node IP address) of this actor."""
        import ray

        return ray.get_runtime_context().get_node_id(), ray.util.get_node_ip_address()

    def free_port(self, host: str) -> int:
        """A TCP port free on this actor's node (rank 0 is asked for the rendezvous port): runs
        ``launchers.env.free_port`` inside the actor."""
        return free_port(host)

    def setup_env(self, env: dict[str, str]) -> None:
        """Export the contract (MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE, LOCAL_RANK, ...)."""
        os.environ.update(env)
        self.rank = int(env["RANK"])
        logging.basicConfig(
            level=logging.INFO,
            force=True,
            format=f"%(asctime)s rank{self.rank} %(levelname)s %(name)s: %(message)s",
        )

    def run(self, config: dict[str, Any], resume: bool | str) -> dict[str, Any]:
        """Train this rank; returns {"status": "ok", "summary": ...} or {"status": "error", ...}."""
        try:
            from layerpar.parallel.worker import run_worker

            summary = run_worker(from_dict(RunConfig, config, "config"), resume=resume)
            return {"status": "ok", "rank": self.rank, "summary": summary}
        except BaseException as error:  # noqa: BLE001 - every failure must reach the driver
            if isinstance(error, WorkerError):
                message, retryable = error.message, error.retryable
            else:
                message = f"{type(error).__name__}: {error}\n{traceback.format_exc()}"
                retryable = False
            return {"status": "error", "rank": self.rank, "message": message, "retryable": retryable}


def import_ray() -> Any:
    """``import ray`` (with usage stats off), or a LaunchError that says how to install it."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        import ray
    except ImportError as error:
        raise LaunchError("launcher: ray needs Ray: pip install 'layerpar[ray]'") from error
    return ray


def launch_ray(config: RunConfig, cluster: ClusterConfig, resume: bool = False) -> dict[str, Any] | None:
    """Train ``config`` on Ray actors; returns rank 0's run summary.  A dead actor (or peers
    that lost it) restarts the group from the newest complete checkpoint set, up to
    ``cluster.max_restarts`` times; Ray stays up between attempts."""
    from layerpar.parallel.run import pin_run_dir

    config = pin_run_dir(config)
    ray = import_ray()
    world_size = config.parallel.stages * config.parallel.replicas
    started_here = _connect(ray, cluster, world_size)
    try:
        return run_with_restarts(
            lambda mode: _attempt(ray, config, cluster, mode), resume, cluster.max_restarts, "ray launcher"
        )
    finally:
        if started_here:
            ray.shutdown()


def _attempt(
    ray: Any, config: RunConfig, cluster: ClusterConfig, resume: bool | str
) -> dict[str, Any] | None:
    """One placement group, one actor per rank, until every rank is done or one fails."""
    from ray.util.placement_group import placement_group, remove_placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    world_size = config.parallel.stages * config.parallel.replicas
    bundle: dict[str, float] = {"CPU": float(cluster.cpus_per_worker)}
    if cluster.gpus_per_node > 0:
        bundle["GPU"] = 1.0
    timeout_s = cluster.timeout_min * 60
    group = None
    actors: list[Any] = []
    try:
        group = placement_group(
            [dict(bundle) for _ in range(world_size)], strategy=cluster.ray.placement_strategy
        )
        _wait_placement(ray, group, world_size, bundle, min(timeout_s, PLACEMENT_TIMEOUT_S))
        remote_worker = ray.remote(RayWorker)
        for rank in range(world_size):
            strategy = PlacementGroupSchedulingStrategy(
                placement_group=group, placement_group_bundle_index=rank
            )
            actors.append(
                remote_worker.options(
                    num_cpus=bundle["CPU"],
                    num_gpus=bundle.get("GPU", 0.0),
                    scheduling_strategy=strategy,
                    # Restarting one rank alone cannot rejoin a running process group: the
                    # whole group is restarted instead (run_with_restarts).
                    max_restarts=0,
                ).remote()
            )
        envs = _contracts(ray, actors, cluster.master_port, timeout_s)
        ray.get([actor.setup_env.remote(env) for actor, env in zip(actors, envs)], timeout=timeout_s)
        config_dict = config.to_dict()
        refs = [actor.run.remote(config_dict, resume) for actor in actors]
        return _wait_all(ray, refs, timeout_s)
    finally:
        _cleanup(ray, actors, group, remove_placement_group)


def _connect(ray: Any, cluster: ClusterConfig, world_size: int) -> bool:
    """Join or start Ray; True when this call started (and so must shut down) the connection."""
    if ray.is_initialized():
        return False
    if cluster.ray.address:
        ray.init(address=cluster.ray.address, log_to_driver=True)
        return True
    needed = world_size * cluster.cpus_per_worker
    num_cpus = cluster.ray.num_cpus or max(os.cpu_count() or 1, needed)
    if num_cpus < needed:
        raise LaunchError(
            f"ray.num_cpus: {num_cpus} is too few for {world_size} workers × cpus_per_worker "
            f"{cluster.cpus_per_worker}; set ray.num_cpus >= {needed} (or null for all cores)"
        )
    from layerpar.parallel.loopback import ray_loopback_only

    with ray_loopback_only(ray):  # a local Ray: its servers on 127.0.0.1 only, token auth on
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=True)
    return True


def _wait_placement(
    ray: Any, group: Any, world_size: int, bundle: dict[str, float], timeout_s: float
) -> None:
    try:
        ray.get(group.ready(), timeout=timeout_s)
    except ray.exceptions.GetTimeoutError:
        raise LaunchError(
            f"Ray could not reserve {world_size} bundles of {bundle} within {timeout_s:.0f} s; "
            f"free resources now: {ray.available_resources()}. Lower cpus_per_worker / gpus_per_node, "
            "or give Ray more nodes"
        ) from None


def _contracts(
    ray: Any, actors: list[Any], master_port: int | None, timeout_s: float
) -> list[dict[str, str]]:
    """The environment of every rank: rank 0's node address, a port free there, local ranks."""
    nodes = ray.get([actor.node.remote() for actor in actors], timeout=timeout_s)
    one_node = len({node_id for node_id, _ in nodes}) == 1
    master_addr = "127.0.0.1" if one_node else nodes[0][1]
    port = master_port or ray.get(
        actors[0].free_port.remote("127.0.0.1" if one_node else "0.0.0.0"), timeout=timeout_s
    )
    seen: dict[str, int] = {}
    envs = []
    for rank, (node_id, _) in enumerate(nodes):
        local_rank = seen.get(node_id, 0)
        seen[node_id] = local_rank + 1
        envs.append(contract(master_addr, port, rank, len(actors), local_rank))
    return envs


def _wait_all(ray: Any, refs: list[Any], timeout_s: float) -> dict[str, Any] | None:
    """Wait for every rank; raise the first failure as WorkerError; return rank 0's summary."""
    rank_of = {ref: rank for rank, ref in enumerate(refs)}
    pending = list(refs)
    summary = None
    deadline = time.monotonic() + timeout_s
    while pending:
        done, pending = ray.wait(pending, num_returns=1, timeout=max(0.0, deadline - time.monotonic()))
        if not done:
            ranks = sorted(rank_of[ref] for ref in pending)
            raise WorkerError(
                f"no result from ranks {ranks} within {timeout_s:.0f} s (timeout_min in the "
                "cluster config); their actors were stopped",
                None,
            )
        failure, result = _outcome(ray, done[0], rank_of[done[0]])
        if failure is not None:
            raise _blame(ray, pending, rank_of, failure)
        if rank_of[done[0]] == 0:
            summary = result["summary"]
    return summary


def _outcome(ray: Any, ref: Any, rank: int) -> tuple[WorkerError | None, dict[str, Any]]:
    """(the rank's failure or None, its result)."""
    try:
        result = ray.get(ref)
    except ray.exceptions.RayActorError as error:
        died = WorkerError(
            f"the Ray actor of rank {rank} died (killed, out of memory or crashed): {error}",
            rank,
            retryable=True,
        )
        return died, {}
    except ray.exceptions.RayError as error:
        return WorkerError(f"{type(error).__name__}: {error}", rank, retryable=True), {}
    if result["status"] == "error":
        return WorkerError(result["message"], rank, retryable=result.get("retryable", False)), result
    return None, result


def _blame(ray: Any, pending: list[Any], rank_of: dict[Any, int], failure: WorkerError) -> WorkerError:
    """A rank that reported an error may only have lost a peer: an actor that died is the cause."""
    if failure.message.startswith("the Ray actor"):
        return failure
    done, _ = ray.wait(pending, num_returns=len(pending), timeout=BLAME_GRACE_S)
    for ref in done:
        other, _ = _outcome(ray, ref, rank_of[ref])
        if other is not None and other.message.startswith("the Ray actor"):
            other.message += f"\n(rank {failure.rank} then failed: {failure.message.strip().splitlines()[0]})"
            return other
    return failure


def _cleanup(ray: Any, actors: list[Any], group: Any, remove_placement_group: Any) -> None:
    """Kill the actors and free the placement group."""
    for actor in actors:
        try:
            ray.kill(actor, no_restart=True)
        except Exception as error:  # noqa: BLE001 - cleanup goes on
            log.debug("could not kill a Ray actor: %s", error)
    if group is not None:
        try:
            remove_placement_group(group)
        except Exception as error:  # noqa: BLE001
            log.debug("could not remove the placement group: %s", error)
