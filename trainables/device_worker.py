"""DeviceWorker: one Ray actor per device that trains the epochs of many trials in one pass.

Each Tune trial stays one configuration with its own checkpoints, ASHA rungs and TPE
result (trainables/worker_trial.py), but its ``step()`` only asks its node's worker for
one epoch. The worker owns the device (a GPU, or the node's CPUs) and holds every trial's
``ProbeTrainer`` between epochs, with the train features opened once in its own memory
(on a GPU: one copy on the device, training/device_features.py). Requests that arrive
together (within ``BATCH_WINDOW_S``, or as soon as every trial it holds has asked) are
trained as one pass per pack key (training/train_loop.py): K heads, one read of the rows
per (seed, epoch) group. Ray Serve's batching has the same shape; an async actor is
enough for it. A pass runs in a thread, so requests keep arriving while it trains.

Checkpoints are the trainer's own files: the worker writes each trial's at the end of its
pass, before the epoch's result goes out, into the trial's folder (the worker is on the
trial's node), and the trial copies it into the checkpoint folder Tune hands it; a fresh
process, or a plain ``ProbeTrainer``, resumes them. If the worker dies, its trials' calls
fail, Tune restores them from those checkpoints, and Ray restarts the worker
(``max_restarts=-1``), empty.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections import defaultdict
from typing import Any

import ray

from tune_eegpt.config import RunConfig
from tune_eegpt.pipeline import PreparedData, build_trainer
from tune_eegpt.training.train_loop import Diverged, train_together
from tune_eegpt.training.trainer import ProbeTrainer

log = logging.getLogger("tune_eegpt")

BATCH_WINDOW_S = 0.05  # how long a pass waits for the other trials' requests, at most
BATCH_WINDOW_SHARE = 0.25  # and at most this share of the last pass's time
DEFAULT_PACK = 16  # trials trained together in one pass, at most


class DeviceWorker:
    def __init__(self, pack: int = DEFAULT_PACK, threads: int | None = None) -> None:
        self.pack = max(1, pack)
        self.threads = threads or os.cpu_count() or 1
        self.trainers: dict[str, ProbeTrainer] = {}
        self.pending: dict[str, asyncio.Future] = {}
        self._runner: asyncio.Task | None = None
        self.pack_sizes: list[int] = []  # trials in each pass so far
        self._last_pass_s = 0.0
        self._last_pass: set[str] = set()  # the trials of the last pass: expected back
        # One thing at a time touches torch's global state: building a trainer seeds the
        # global generator for the head's initial weights, a checkpoint restores it, and
        # the autograd engine's dropout draws from it. A register that waits for a pass
        # joins the next one.
        self._exclusive = threading.Lock()

    def _alone(self, work, *args):
        with self._exclusive:
            return work(*args)

    # ---- trials ------------------------------------------------------------------------
    async def register(
        self, trial_id: str, config: dict[str, Any], prepared: dict[str, Any], log_dir: str
    ) -> dict[str, Any]:
        """Builds the trial's trainer here (replacing one it had); returns its engine."""
        await self.release(trial_id)
        cfg = RunConfig.from_dict(config, source=f"trial {trial_id}")
        cfg = cfg.with_overrides({"threads": self.threads}, source="device worker")
        data = PreparedData(**prepared)
        data.require()  # a trial never decodes or encodes
        trainer = await asyncio.to_thread(self._alone, build_trainer, cfg, data, log_dir)
        self.trainers[trial_id] = trainer
        return {"engine": trainer.engine_name, "engine_reason": trainer.engine_reason}

    async def release(self, trial_id: str) -> None:
        trainer = self.trainers.pop(trial_id, None)
        if trainer is not None:
            trainer.close()

    async def save(self, trial_id: str, folder: str) -> str:
        trainer = self.trainers[trial_id]
        return str(await asyncio.to_thread(self._alone, trainer.save_checkpoint, folder))

    async def load(self, trial_id: str, checkpoint: str) -> dict[str, Any]:
        """Restores the trial from a checkpoint file or a folder holding one (the newest)."""
        trainer = self.trainers[trial_id]
        await asyncio.to_thread(self._alone, trainer.load_checkpoint, checkpoint)
        return self._progress(trainer)

    async def stats(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "trials": len(self.trainers), "pack_sizes": self.pack_sizes}

    async def train_epoch(self, trial_id: str) -> dict[str, Any]:
        """The trial's next epoch, trained with whichever trials ask at the same time."""
        if trial_id not in self.trainers:
            raise KeyError(f"trial {trial_id} is not registered with this worker")
        future = asyncio.get_running_loop().create_future()
        self.pending[trial_id] = future
        if self._runner is None or self._runner.done():
            self._runner = asyncio.create_task(self._run_passes())
        return await future

    # ---- passes ------------------------------------------------------------------------
    async def _run_passes(self) -> None:
        loop = asyncio.get_running_loop()
        while self.pending:
            # wait for the trials of the last pass to ask again, as long as waiting costs
            # little against a pass (short passes gain nothing from company anyway)
            deadline = loop.time() + min(BATCH_WINDOW_S, BATCH_WINDOW_SHARE * self._last_pass_s)
            expected = self._last_pass & set(self.trainers)
            while not expected <= set(self.pending) and loop.time() < deadline:
                await asyncio.sleep(0.002)
            batch, self.pending = self.pending, {}
            for group in self._passes(list(batch)):
                started = time.time()
                trainers = [self.trainers[t] for t in group]
                try:
                    outcomes = await asyncio.to_thread(self._alone, train_together, trainers)
                except Exception as exc:  # the pass failed: each of its trials says so
                    for t in group:
                        batch[t].set_exception(exc)
                    continue
                self.pack_sizes.append(len(group))
                self._last_pass_s = time.time() - started
                self._last_pass = set(group)
                # each epoch's state on disk before its result is out: a result Tune has
                # seen always has a checkpoint, whatever happens to this worker next
                saved = await asyncio.to_thread(self._alone, self._save_all, trainers)
                for t, trainer, outcome, path in zip(group, trainers, outcomes, saved, strict=True):
                    result = self._result(trainer, outcome, started, len(group))
                    batch[t].set_result({**result, "checkpoint": path})

    @staticmethod
    def _save_all(trainers: list[ProbeTrainer]) -> list[str | None]:
        return [
            None if t.diverged else str(t.save_checkpoint(t.log_dir / "checkpoints"))
            for t in trainers
        ]

    def _passes(self, trial_ids: list[str]) -> list[list[str]]:
        """The requests as passes: one per pack key, at most ``pack`` trials each."""
        by_key: dict[tuple, list[str]] = defaultdict(list)
        for t in trial_ids:
            trainer = self.trainers[t]
            by_key[trainer.engine.pack_key(trainer)].append(t)
        return [
            ids[i : i + self.pack] for ids in by_key.values() for i in range(0, len(ids), self.pack)
        ]

    def _result(
        self, trainer: ProbeTrainer, outcome: dict | Diverged, started: float, pack: int
    ) -> dict[str, Any]:
        result = {"pass_started": started, "pack": pack, **self._progress(trainer)}
        if isinstance(outcome, Diverged):
            return {**result, "diverged_reason": str(outcome)}
        return {**result, "metrics": outcome}

    @staticmethod
    def _progress(trainer: ProbeTrainer) -> dict[str, Any]:
        return {
            "epoch": trainer.epoch,
            "global_step": trainer.global_step,
            "best_val_auroc": trainer.best_val_auroc,
            "finished": trainer.finished,
        }


# Ray restarts a worker that died (empty: its trials restore from their checkpoints)
RemoteDeviceWorker = ray.remote(max_restarts=-1)(DeviceWorker)
