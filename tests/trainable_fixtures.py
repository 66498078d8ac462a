"""Trainables with failure injection, for tests only: the product's ProbeTrainable has no
test switch (Ray's own tests likewise keep failing trainables in test code)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from trainables import ProbeTrainable


class CrashOnceTrainable(ProbeTrainable):
    """Raises once, at the start of epoch ``crash_epoch`` + 1; the marker file remembers
    across the restart, so the restarted trial goes on."""

    marker = ""
    crash_epoch = 2

    def step(self):
        if self.trainer.epoch == self.crash_epoch and not Path(self.marker).exists():
            Path(self.marker).write_text(str(os.getpid()))
            raise RuntimeError(f"injected crash at epoch {self.crash_epoch}")
        return super().step()


def crash_once(marker: str | Path, epoch: int = 2) -> type[CrashOnceTrainable]:
    return type("CrashOnce", (CrashOnceTrainable,), {"marker": str(marker), "crash_epoch": epoch})


@contextmanager
def shipped_by_value() -> Iterator[None]:
    """Ray's workers cannot import this test module: pickle its classes by value."""
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        yield
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
