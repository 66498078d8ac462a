"""Step engines: how a pass computes its micro-batches and optimizer steps.

An engine is a module of this package with ``NAME``, ``PRIORITY``, ``blocker(trainer)``
(None, or why it cannot train that trainer), ``pack_key(trainer)`` (trainers with equal
keys can share one pass) and ``build(trainers)``. ``choose_engine`` takes the applicable
engine of highest priority; removing a module removes that engine and touches no other
file. The loop that drives an engine is training/train_loop.py.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import lru_cache
from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tune_eegpt.training.trainer import ProbeTrainer


@lru_cache(maxsize=1)
def engine_modules() -> tuple[ModuleType, ...]:
    """Every engine module of this package, highest priority first."""
    found = [
        importlib.import_module(f"{__name__}.{m.name}") for m in pkgutil.iter_modules(__path__)
    ]
    return tuple(sorted(found, key=lambda m: -m.PRIORITY))


def choose_engine(trainer: ProbeTrainer, wanted: str | None = None) -> tuple[ModuleType, str]:
    """(the engine module that trains ``trainer``, why it was chosen, in words).
    ``wanted``: an engine name to use if it applies (else the reason it does not)."""
    skipped = []
    for module in engine_modules():
        if wanted is not None and module.NAME != wanted and module.PRIORITY > 0:
            skipped.append(f"{module.NAME}: not asked for")
            continue
        reason = module.blocker(trainer)
        if reason is None:
            why = "; ".join(skipped) if skipped else "it applies"
            return module, f"{module.NAME} ({why})"
        skipped.append(f"{module.NAME}: {reason}")
    raise RuntimeError("no step engine applies (the autograd engine always should)")
