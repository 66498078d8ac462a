"""The search's device workers, one per node, found and started through one registry.

Kept apart from trainables/device_worker.py so that a trial process, which only looks its
worker up, never imports torch: the registry imports the worker (and torch) in its own
process, when it starts the first one.
"""

from __future__ import annotations

from typing import Any

import ray

NAMESPACE = "tune_eegpt"
PREFIX = "tune-eegpt-worker"


class WorkerRegistry:
    """The search's device workers, one per node, started on first use by a trial of that
    node. The registry belongs to the search's driver, and the workers to the registry, so
    they all end with the driver (a Ctrl-C, a SIGKILL or a lost head connection alike).
    A node that joins later (an autoscaled GPU worker) gets its worker when its first
    trial asks. A worker reserves one CPU and, on a node with GPUs, one GPU; it trains with
    as many torch threads as its node has CPUs."""

    def __init__(self, pack: int) -> None:
        import trainables.device_worker  # noqa: F401  (torch: imported while trials start)

        self.pack = pack
        self.workers: dict[str, Any] = {}

    async def worker_for(self, node_id: str) -> Any:
        if node_id not in self.workers:
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            from trainables.device_worker import RemoteDeviceWorker  # torch: here only

            node = next(n for n in ray.nodes() if n["NodeID"] == node_id)
            resources = node.get("Resources", {})
            cpus = int(resources.get("CPU", 1))
            self.workers[node_id] = RemoteDeviceWorker.options(
                num_cpus=min(1, cpus),
                num_gpus=1 if resources.get("GPU", 0) >= 1 else 0,
                scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False),
            ).remote(pack=self.pack, threads=max(1, cpus))
        return self.workers[node_id]

    async def pack_sizes(self) -> list[int]:
        """The trial count of every pass the workers ran (a worker that died: none)."""
        sizes: list[int] = []
        for worker in self.workers.values():
            try:
                sizes += (await worker.stats.remote())["pack_sizes"]
            except ray.exceptions.RayError:
                pass
        return sizes


def registry_name(job_id: str) -> str:
    return f"{PREFIX}s-{job_id}"


def start_registry(pack: int) -> Any:
    """The search's registry of device workers (on the driver's node, no resources)."""
    job_id = ray.get_runtime_context().get_job_id()
    return (
        ray.remote(WorkerRegistry)
        .options(name=registry_name(job_id), namespace=NAMESPACE, num_cpus=0)
        .remote(pack)
    )


def worker_of_this_node(job_id: str) -> Any:
    """The device worker of the caller's node, started by the search's registry."""
    try:
        registry = ray.get_actor(registry_name(job_id), namespace=NAMESPACE)
    except ValueError as exc:
        raise RuntimeError(
            f"no device-worker registry for job {job_id}: a WorkerTrial runs inside "
            "`python -m tune_eegpt.search`, which starts it"
        ) from exc
    return ray.get(registry.worker_for.remote(ray.get_runtime_context().get_node_id()))
