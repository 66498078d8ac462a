"""One Ray actor per GPU that keeps a node's train features in that GPU's memory.

The first trial on a GPU creates the holder (a named, detached actor: trials come and go,
the features stay); every trial on that GPU opens the holder's copy through CUDA IPC
handles (training/device_features.py) instead of copying 10s of GB per trial. Trials on a
CPU, or without a feature cache, do nothing here.

The holder needs no GPU of its own from Ray (num_gpus=0): it is pointed at the trial's
physical GPU with CUDA_VISIBLE_DEVICES, so the memory it allocates is where the trial runs.
Its name carries the search's Ray job id (a trial runs in its driver's job), so two
searches on one cluster never share or release each other's holders; the search's driver
releases its own when the trials end (``release_feature_holders``), which matters on a
cluster that stays up after the search. Only a trial whose config takes the fused probe
step (the only one that reads device-resident rows) makes or opens a holder.
"""

from __future__ import annotations

import os
from typing import Any

import ray
import torch
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from tune_eegpt.config import RunConfig
from tune_eegpt.pipeline import PreparedData, open_window_cache, split_sources
from tune_eegpt.training.device_features import (
    copy_rows_to,
    export_rows,
    fits_on_device,
    import_rows,
    register_rows,
    rows_key,
    rows_nbytes,
    say_once,
)
from tune_eegpt.training.feature_rows import feature_rows
from tune_eegpt.training.fused_probe import fused_probe_config_blocker

NAMESPACE = "tune-eegpt-features"


@ray.remote(num_cpus=0, num_gpus=0)
class FeatureHolder:
    def __init__(self, cfg: dict[str, Any], prepared: dict[str, Any]) -> None:
        rows = _train_rows(RunConfig.from_dict(cfg), PreparedData(**prepared))
        self.key = rows_key(rows)
        self.rows = copy_rows_to(rows, torch.device("cuda", 0))

    def export(self) -> dict[str, Any]:
        return export_rows(self.rows, self.key)


def share_train_features(cfg: RunConfig, prepared: PreparedData) -> None:
    """In a trial process on a GPU: opens (creating it if needed) the holder of this
    GPU's copy of the train features and registers it for the trainer."""
    if not torch.cuda.is_available() or prepared.feature_cache is None:
        return
    if cfg.train.device == "cpu" or fused_probe_config_blocker(cfg) is not None:
        return
    rows = _train_rows(cfg, prepared)
    gpu = os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0]
    context = ray.get_runtime_context()
    node = context.get_node_id()
    name = f"{holder_prefix(context.get_job_id())}{node[:12]}-gpu{gpu}-{rows_key(rows)}"
    try:  # another trial on this GPU made it already (its copy is in the free memory too)
        holder = ray.get_actor(name, namespace=NAMESPACE)
    except ValueError:
        free, total = torch.cuda.mem_get_info(0)
        fits, reason = fits_on_device(rows_nbytes(rows), free, total)
        if not fits:
            say_once(reason)
            return
        holder = FeatureHolder.options(
            name=name,
            namespace=NAMESPACE,
            get_if_exists=True,  # two trials starting at once: one holder
            lifetime="detached",
            runtime_env={"env_vars": {"CUDA_VISIBLE_DEVICES": gpu}},
            scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False),
        ).remote(cfg.to_dict(), prepared.to_dict())
    exported = ray.get(holder.export.remote())
    register_rows(import_rows(exported), exported["key"])


def holder_prefix(job_id: str) -> str:
    return f"job{job_id}-"


def release_feature_holders(every_search: bool = False) -> int:
    """In a search's driver, once its trials are over: ends the holders they made (detached
    actors outlive the trials, and on a cluster that stays up, the search). Returns how
    many. ``every_search``: every search's holders, for those a driver killed hard left
    behind (``python cluster/release_feature_holders.py``, while no search runs:
    a running trial reads its holder's memory)."""
    prefix = "" if every_search else holder_prefix(ray.get_runtime_context().get_job_id())
    released = 0
    for actor in ray.util.list_named_actors(all_namespaces=True):
        if actor["namespace"] == NAMESPACE and actor["name"].startswith(prefix):
            try:
                ray.kill(ray.get_actor(actor["name"], namespace=NAMESPACE))
                released += 1
            except ValueError:  # gone in the meantime
                pass
    return released


def _train_rows(cfg: RunConfig, prepared: PreparedData):
    cache = open_window_cache(prepared.window_cache, cfg.data.split_seed, cfg.data.val_fraction)
    return feature_rows(split_sources(prepared, cache, "train"))
