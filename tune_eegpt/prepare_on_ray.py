"""Data preparation as Ray work: decode every recording once per cluster, encode on a GPU.

Stage 1, decoding: one Ray task per recording (1 CPU each, spread over every node's
CPUs), each writing its shard (or rejection record) straight into the cache location,
which every node must reach: a shared mount or an object-store URI. The driver only
submits and waits (``ray.wait``), so its progress bar shows recordings and windows per
second and an ETA. A task on a lost node is rerun elsewhere (``max_retries``); as a shard
appears only when whole (temp + rename, or an object upload), the rerun writes it once.

Stage 2, encoding: one actor that holds one GPU (``num_gpus=1``; bf16 autocast on CUDA),
or the driver itself on a machine without a GPU (the embedded default). Why a plain actor
and not Ray Data: the windows are memory-mapped files that the actor reads in place (or
copies to its node once); Ray Data would push ~40 GB of windows through the object store
to save nothing, and the encoder pass over all of TUAB takes minutes on one GPU
(benchmarks/README.md), so splitting it over GPUs would cost a merge of ~61 GB to win
seconds.

Local Ray starts when there is no cluster (``address=None``), so one command still does
everything on a laptop.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import ray
from tqdm import tqdm

from tune_eegpt.config import RunConfig
from tune_eegpt.data.build import TaskRunner, process_recording
from tune_eegpt.data.settings import Preprocessing
from tune_eegpt.data.storage import Location, file_lock, is_uri
from tune_eegpt.pipeline import (
    DEFAULT_LOCAL_COPIES,
    PreparedData,
    expected_feature_file,
    prepare_features,
    prepare_windows,
    uses_feature_cache,
)

# a decode task lost with its node is run again elsewhere this many times
DECODE_RETRIES = 3


def connect(address: str | None = None, num_cpus: int | None = None) -> bool:
    """Joins the cluster at ``address`` ('auto', HOST:PORT), or starts Ray on this machine
    (with ``num_cpus``, default all) when it is None or 'local'. Returns True when this
    call started or joined Ray (the caller then shuts it down); False when Ray was
    already initialised in this process."""
    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if address and address != "local":
        ray.init(address=address, configure_logging=False)
    else:
        ray.init(
            address="local" if address else None,
            num_cpus=num_cpus or os.cpu_count(),
            include_dashboard=False,
            configure_logging=False,
        )
    return True


def _decode(row: dict, settings: Preprocessing, shard_dir: str) -> dict:
    import resource

    node = ray.get_runtime_context().get_node_id()
    result = process_recording(row, settings, shard_dir, writer=node)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # this worker's peak
    return {**result, "recording": row["recording"], "node": node, "peak_rss_mb": peak_mb}


def ray_runner(max_retries: int = DECODE_RETRIES) -> TaskRunner:
    """A build.py runner that decodes each recording as a Ray task (1 CPU, spread).
    ``runner.results`` collects each finished task's {"status", "windows", "node"}."""

    def run(todo: list[dict], settings: Preprocessing, shard_dir: str, progress: bool) -> None:
        if todo and not is_uri(shard_dir) and _cluster_has_several_nodes():
            _check_shared(shard_dir)
        task = ray.remote(_decode).options(
            num_cpus=1, max_retries=max_retries, scheduling_strategy="SPREAD"
        )
        settings_ref = ray.put(settings)
        pending = [task.remote(row, settings_ref, shard_dir) for row in todo]
        windows, started = 0, time.perf_counter()
        with tqdm(
            total=len(todo), desc="EDF -> windows (Ray)", unit="rec", disable=not progress
        ) as bar:
            while pending:
                done, pending = ray.wait(pending, num_returns=min(len(pending), 16), timeout=1.0)
                for row_result in ray.get(done):  # a crashed task (a bug) surfaces here
                    run.results.append(row_result)
                    windows += row_result["windows"]
                bar.set_postfix_str(
                    f"{windows / (time.perf_counter() - started):.0f} windows/s", refresh=False
                )
                bar.update(len(done))

    run.results = []
    run.label = "Ray tasks"
    return run


class FeatureEncoder:
    """The encoding stage in its own process, placed by Ray on a GPU node."""

    def run(self, cfg: dict, window_cache: str, local_copies: str) -> dict:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
        path = prepare_features(
            RunConfig.from_dict(cfg),
            window_cache,
            device=device,
            local_copies=local_copies,
            batch_size=256,
        )
        return {"path": path, "device": device, "node": ray.get_runtime_context().get_node_id()}


def prepare_on_ray(
    cfg: RunConfig,
    address: str | None = None,
    progress: bool = True,
    local_copies: str = DEFAULT_LOCAL_COPIES,
    check_windows: Callable[[str], None] | None = None,
) -> PreparedData:
    """Both stages on the Ray cluster at ``address`` (local Ray when None and Ray is not
    already running). Reuses whatever is complete; returns where the caches are.
    ``check_windows`` gets the window cache before the feature pass (what needs the
    corpus's size is refused there, before the encoder runs)."""
    connect(address)
    if not is_uri(cfg.data.cache_dir) and _cluster_has_several_nodes():
        # trials on every node will open these caches: they must be where all nodes see them
        folder = Path(cfg.data.cache_dir).expanduser()
        folder.mkdir(parents=True, exist_ok=True)
        _check_shared(str(folder))
    with file_lock(_lock_path(cfg, local_copies)):
        window_cache = str(prepare_windows(cfg, runner=ray_runner()))
        if check_windows is not None:
            check_windows(window_cache)
        feature_cache = None
        if uses_feature_cache(cfg):
            feature_cache = encode_on_ray(cfg, window_cache, progress, local_copies)["path"]
    return PreparedData(window_cache, feature_cache, local_copies)


def encode_on_ray(
    cfg: RunConfig,
    window_cache: str,
    progress: bool = True,
    local_copies: str = DEFAULT_LOCAL_COPIES,
) -> dict:
    """Stage 2. Where it runs: an actor holding one GPU when the cluster has one; an actor
    on any node's CPU on a cluster without GPUs; in this process for local Ray without a
    GPU (no process to start). Returns {"path", "device", "node"}."""
    import json

    window = Location(window_cache)
    manifest = json.loads(window.child("manifest.json").read_bytes())
    expected = expected_feature_file(cfg, manifest["key"], manifest["settings"]["channels"])
    if Location(expected).exists():
        return {"path": expected, "device": None, "node": None}
    resources = ray.cluster_resources()
    gpus = resources.get("GPU", 0)
    if not gpus and len(ray.nodes()) == 1 and resources.get("CPU", 0) >= 1:
        path = prepare_features(cfg, window_cache, progress=progress, local_copies=local_copies)
        return {"path": path, "device": "cpu", "node": ray.get_runtime_context().get_node_id()}
    actor_class = ray.remote(FeatureEncoder).options(
        num_gpus=1 if gpus else 0, num_cpus=1, max_restarts=1, max_task_retries=1
    )
    actor = actor_class.remote()
    try:
        return ray.get(actor.run.remote(cfg.to_dict(), window_cache, local_copies))
    finally:
        ray.kill(actor)


def _cluster_has_several_nodes() -> bool:
    return sum(1 for n in ray.nodes() if n["Alive"]) > 1


def _check_shared(folder: str) -> None:
    """Tasks and trials on other nodes use ``folder``: say so when it is not on storage
    every node sees (a probe file written here must be visible to a task on each node)."""
    probe = Path(folder) / f".probe-{os.getpid()}-{time.time_ns()}"
    probe.write_text("probe")
    try:
        seen = ray.get(
            [
                ray.remote(os.path.exists)
                .options(num_cpus=0, scheduling_strategy="SPREAD")
                .remote(str(probe))
                for _ in ray.nodes()
            ]
        )
    finally:
        probe.unlink(missing_ok=True)
    if not all(seen):
        raise ValueError(
            f"cache location {folder} is on this machine's own disk, not on storage every "
            "node sees: give a shared mount or an object-store URI"
        )


def _lock_path(cfg: RunConfig, local_copies: str) -> Path:
    if is_uri(cfg.data.cache_dir):
        return Path(local_copies).expanduser() / ".prepare.lock"
    return Path(cfg.data.cache_dir).expanduser() / ".prepare.lock"
