"""A trial restored from a checkpoint that Tune deleted: fall back to the newest it kept.

Tune deletes a trial's older checkpoints (``CheckpointConfig(num_to_keep)``) as soon as a
newer one is registered, and writes its experiment state (which names each trial's latest
checkpoint) at most once a second and after each deletion, on its next loop. A driver
killed hard between the two leaves a state that names a checkpoint no longer on storage;
``tune.Trainable.restore`` then fails on every retry and the trial ends in ERROR (seen in
``test_killed_driver_resumes_without_losing_or_repeating_trials``). The trial's folder
still holds the newer checkpoints the killed driver's trials wrote: the newest of them is
where the trial had got to, so training goes on from there and no epoch is run twice.
"""

from __future__ import annotations

import logging
import posixpath
import re
from typing import Any

import pyarrow.fs as pafs
from ray import tune

log = logging.getLogger("tune_eegpt")
_FOLDER = re.compile(r"^checkpoint_\d+$")
_STATE_FILE = re.compile(r"^step-\d{9}\.pt$")  # training/checkpoint.py's names


def existing_checkpoint(result: Any) -> tuple[Any, str | None]:
    """``result`` (what Tune passes to ``Trainable.restore``: a checkpoint and its
    metrics) as it is when its checkpoint exists; else the same with the trial's newest
    checkpoint folder that holds a trainer state, and that folder's path (None: nothing
    replaced)."""
    checkpoint = getattr(result, "checkpoint", None)
    if checkpoint is None:
        return result, None
    fs = checkpoint.filesystem
    if fs.get_file_info(checkpoint.path).type != pafs.FileType.NotFound:
        return result, None
    trial_dir = posixpath.dirname(checkpoint.path.rstrip("/"))
    folders = sorted(
        info.path
        for info in fs.get_file_info(pafs.FileSelector(trial_dir, allow_not_found=True))
        if info.type == pafs.FileType.Directory and _FOLDER.match(info.base_name)
    )
    for folder in reversed(folders):
        names = [f.base_name for f in fs.get_file_info(pafs.FileSelector(folder))]
        if any(_STATE_FILE.match(n) for n in names):
            replaced = tune.Checkpoint(folder, filesystem=fs)
            return type(result)(checkpoint=replaced, metrics=result.metrics), folder
    return result, None


class FallbackRestore:
    """Mixed into a Trainable: ``restore`` goes on from the newest checkpoint the trial kept
    when the one Tune names is gone. The class says how many epochs its trainer has
    completed (``epochs_done``), which Tune's iteration count then follows."""

    epochs_done: int

    def restore(self, checkpoint_path: Any) -> None:
        result, replacement = existing_checkpoint(checkpoint_path)
        super().restore(result)
        if replacement is not None:
            gone = getattr(checkpoint_path, "checkpoint", None)
            log.warning(
                "trial %s: %s is gone from storage (a driver killed between Tune's clean-up "
                "and its next state snapshot); restored from %s, the newest this trial kept",
                self.trial_id,
                getattr(gone, "path", gone),
                replacement,
            )
            self._iteration = self.epochs_done
