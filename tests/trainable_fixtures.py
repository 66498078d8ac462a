"""Trainables with failure injection, for tests only: the product's trainables have no
test switch (Ray's own tests likewise keep failing trainables in test code). They are the
default kind, WorkerTrial: their epochs are trained by their node's device worker."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import ray

from trainables.worker_trial import WorkerTrial


class CrashOnceTrainable(WorkerTrial):
    """Raises once, at the start of epoch ``crash_epoch`` + 1; the marker file remembers
    across the restart, so the restarted trial goes on."""

    marker = ""
    crash_epoch = 2

    def step(self):
        if self.epoch == self.crash_epoch and not Path(self.marker).exists():
            Path(self.marker).write_text(str(os.getpid()))
            raise RuntimeError(f"injected crash at epoch {self.crash_epoch}")
        return super().step()


def crash_once(marker: str | Path, epoch: int = 2) -> type[CrashOnceTrainable]:
    return type("CrashOnce", (CrashOnceTrainable,), {"marker": str(marker), "crash_epoch": epoch})


class LoseCheckpointOnceTrainable(CrashOnceTrainable):
    """CrashOnceTrainable whose newest checkpoint folder moves to a higher number just
    before the crash: Tune's record then names a folder that is gone while a newer one
    holds the state, as a driver killed between Tune's clean-up of old checkpoints and its
    next state snapshot leaves it (trainables/checkpoint_fallback.py)."""

    def step(self):
        if self.epoch == self.crash_epoch and not Path(self.marker).exists():
            trial = Path(self._storage.trial_fs_path)  # local storage in the tests
            newest = sorted(trial.glob("checkpoint_*"))[-1]
            newest.rename(trial / "checkpoint_000099")
        return super().step()


def lose_checkpoint_once(marker: str | Path, epoch: int = 2) -> type[CrashOnceTrainable]:
    attrs = {"marker": str(marker), "crash_epoch": epoch}
    return type("LoseCheckpointOnce", (LoseCheckpointOnceTrainable,), attrs)


class KillWorkerOnceTrainable(CrashOnceTrainable):
    """At the start of epoch ``crash_epoch`` + 1 (once, across restarts), asks the worker
    for that epoch and, while the request is in flight, kills the worker's process with
    SIGKILL: every trial of the worker loses its pending epoch."""

    def step(self):
        if self.epoch == self.crash_epoch and not Path(self.marker).exists():
            pid = ray.get(self.worker.stats.remote())["pid"]
            Path(self.marker).write_text(str(pid))
            pending = self.worker.train_epoch.remote(self.trial_id)
            os.kill(pid, 9)
            ray.get(pending)  # raises: the worker died
        return super().step()


def kill_worker_once(marker: str | Path, epoch: int = 1) -> type[KillWorkerOnceTrainable]:
    attrs = {"marker": str(marker), "crash_epoch": epoch}
    return type("KillWorkerOnce", (KillWorkerOnceTrainable,), attrs)


@contextmanager
def shipped_by_value() -> Iterator[None]:
    """Ray's workers cannot import this test module: pickle its classes by value."""
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        yield
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
