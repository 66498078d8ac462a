"""Ray Tune Trainables around the plain-PyTorch probe trainer: ``WorkerTrial`` (its node's
DeviceWorker trains it, packed with other trials) and ``ProbeTrainable`` (trains in its
own process). Imported lazily: a WorkerTrial's process never imports torch."""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "ProbeTrainable": "trainables.probe_trainable",
    "WorkerTrial": "trainables.worker_trial",
    "trial_run_config": "trainables.trial_config",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'trainables' has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)
