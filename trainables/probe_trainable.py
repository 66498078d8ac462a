"""ProbeTrainable: one Tune trial = one ProbeTrainer run in the trial's own process;
one ``step`` = one epoch. (``--pack 0``; the default trains trials in their node's
DeviceWorker instead: trainables/worker_trial.py.)

A thin class Trainable: everything it does is delegated to the trainer, which exists
without Ray. Trial configs hold only the searched and fixed hyperparameters (bare
run-config field names); the base run config and the prepared cache paths are bound
once with ``tune.with_parameters``.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import ray
from ray import tune

from trainables.checkpoint_fallback import FallbackRestore
from trainables.trial_config import DIVERGED_AUROC, trial_run_config
from tune_eegpt.pipeline import PreparedData, build_trainer
from tune_eegpt.training.trainer import Diverged


class ProbeTrainable(FallbackRestore, tune.Trainable):
    uses_worker = False

    def setup(
        self,
        config: dict[str, Any],
        base_config: dict[str, Any],
        prepared: dict[str, Any],
    ) -> None:
        # one "Checkpoint successfully created" line per trial-epoch drowns Tune's table
        logging.getLogger("ray.train._internal.storage").setLevel(logging.WARNING)
        self.base_config = base_config
        self.prepared = PreparedData(**prepared)
        self._build(config)

    def _build(self, config: dict[str, Any]) -> None:
        self._build_started = time.perf_counter()
        self.startup_s = float("nan")  # trial start (or actor reuse) -> first optimizer step
        cfg = trial_run_config(self.base_config, config)
        self.prepared.require()  # a trial never decodes or encodes
        self.trainer = build_trainer(cfg, self.prepared, log_dir=Path(self.logdir) / "trainer")

    def step(self) -> dict[str, Any]:
        try:
            metrics = self.trainer.train_epoch(on_step=self._note_first_step)
        except Diverged as exc:
            return {
                "epoch": float(self.trainer.epoch + 1),
                "global_step": float(self.trainer.global_step),
                "val_auroc": DIVERGED_AUROC,
                "best_val_auroc": max(self.trainer.best_val_auroc, DIVERGED_AUROC),
                "diverged": 1,
                "node_id": ray.get_runtime_context().get_node_id(),
                "diverged_reason": str(exc),
                "schedule_done": 0,
                "done": True,
            }
        metrics.update(
            diverged=0,
            schedule_done=int(self.trainer.finished),
            startup_s=self.startup_s,
            engine=self.trainer.engine_name,
            node_id=ray.get_runtime_context().get_node_id(),  # where the epoch ran
        )
        if self.trainer.finished:
            metrics["done"] = True
        return metrics

    def _note_first_step(self, trainer) -> None:
        if math.isnan(self.startup_s):  # the first step of this trial
            self.startup_s = time.perf_counter() - self._build_started

    def save_checkpoint(self, checkpoint_dir: str) -> None:
        # The file is named after global_step (step-000001234.pt) and holds it.
        self.trainer.save_checkpoint(checkpoint_dir)

    def load_checkpoint(self, checkpoint: str | dict) -> None:
        self.trainer.load_checkpoint(checkpoint)

    @property
    def epochs_done(self) -> int:
        return self.trainer.epoch

    def reset_config(self, new_config: dict[str, Any]) -> bool:
        self.trainer.close()
        self._build(new_config)  # the caches and encoder stay open in this process
        self.config = new_config
        return True

    def cleanup(self) -> None:
        self.trainer.close()
