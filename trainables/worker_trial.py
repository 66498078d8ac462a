"""WorkerTrial: a Tune trial whose epochs its node's DeviceWorker trains, packed with others.

The trial is one configuration, with its own checkpoints, ASHA rungs and TPE result, as a
``ProbeTrainable`` is; only its arithmetic happens elsewhere: ``step`` asks the worker for
one epoch and returns the metrics, ``save_checkpoint``/``load_checkpoint`` have the worker
write or read the trainer's checkpoint in this trial's folder. The trial process imports
neither torch nor the data: it is a thin client, and reserves ``TRIAL_CPU`` of a CPU so
that many of them fit beside the worker, which reserves the CPU (and GPU) that trains.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

import ray
from ray import tune

from trainables.checkpoint_fallback import FallbackRestore
from trainables.trial_config import DIVERGED_AUROC, trial_run_config

TRIAL_CPU = 0.05  # what a waiting client reserves: twenty per CPU


class WorkerTrial(FallbackRestore, tune.Trainable):
    uses_worker = True

    def setup(
        self, config: dict[str, Any], base_config: dict[str, Any], prepared: dict[str, Any]
    ) -> None:
        # one "Checkpoint successfully created" line per trial-epoch drowns Tune's table
        logging.getLogger("ray.train._internal.storage").setLevel(logging.WARNING)
        from trainables.worker_registry import worker_of_this_node

        self.base_config, self.prepared = base_config, prepared
        self.worker = worker_of_this_node(ray.get_runtime_context().get_job_id())
        self._build(config)

    def _build(self, config: dict[str, Any]) -> None:
        self._build_started = time.time()
        self.startup_s = float("nan")  # trial start (or actor reuse) -> its first pass
        cfg = trial_run_config(self.base_config, config)
        log_dir = str(Path(self.logdir) / "trainer")
        previous = getattr(self, "registered_as", None)
        if previous is not None and previous != self.trial_id:  # an actor reused by Tune
            ray.get(self.worker.release.remote(previous))
        info = ray.get(
            self.worker.register.remote(self.trial_id, cfg.to_dict(), self.prepared, log_dir)
        )
        self.registered_as = self.trial_id
        self.last_checkpoint = None  # the worker's checkpoint of the last epoch trained
        self.engine = info["engine"]
        self.epoch = 0  # epochs this trial's trainer has completed
        self.global_step = 0

    def step(self) -> dict[str, Any]:
        reply = ray.get(self.worker.train_epoch.remote(self.trial_id))
        if math.isnan(self.startup_s):
            self.startup_s = reply["pass_started"] - self._build_started
        self.epoch, self.global_step = reply["epoch"], reply["global_step"]
        self.last_checkpoint = reply["checkpoint"]  # written by the worker before replying
        node = ray.get_runtime_context().get_node_id()
        if "diverged_reason" in reply:
            return {
                "epoch": float(self.epoch + 1),
                "global_step": float(self.global_step),
                "val_auroc": DIVERGED_AUROC,
                "best_val_auroc": max(reply["best_val_auroc"], DIVERGED_AUROC),
                "diverged": 1,
                "node_id": node,
                "diverged_reason": reply["diverged_reason"],
                "schedule_done": 0,
                "engine": self.engine,
                "pack": reply["pack"],
                "done": True,
            }
        metrics = dict(reply["metrics"])
        metrics.update(
            diverged=0,
            schedule_done=int(reply["finished"]),
            startup_s=self.startup_s,
            node_id=node,  # where the epoch ran
            engine=self.engine,
            pack=reply["pack"],  # trials trained in this epoch's pass
        )
        if reply["finished"]:
            metrics["done"] = True
        return metrics

    def save_checkpoint(self, checkpoint_dir: str) -> None:
        # The file is named after global_step (step-000001234.pt) and holds it. The worker
        # wrote it at the end of the epoch's pass; a copy needs no worker, alive or not.
        if self.last_checkpoint is None:  # nothing trained since the start or a restore
            ray.get(self.worker.save.remote(self.trial_id, checkpoint_dir))
        else:  # a hard link where both folders share a disk: nothing written twice
            target = Path(checkpoint_dir) / Path(self.last_checkpoint).name
            try:
                os.link(self.last_checkpoint, target)
            except OSError:
                shutil.copy2(self.last_checkpoint, target)

    def load_checkpoint(self, checkpoint: str | dict) -> None:
        progress = ray.get(self.worker.load.remote(self.trial_id, str(checkpoint)))
        self.last_checkpoint = None
        self.epoch, self.global_step = progress["epoch"], progress["global_step"]

    @property
    def epochs_done(self) -> int:
        return self.epoch

    def reset_config(self, new_config: dict[str, Any]) -> bool:
        self._build(new_config)  # registering again replaces the trainer
        self.config = new_config
        return True

    def cleanup(self) -> None:
        try:
            ray.get(self.worker.release.remote(self.registered_as))
        except ray.exceptions.RayActorError:
            pass  # the worker is gone: nothing of this trial is left there
