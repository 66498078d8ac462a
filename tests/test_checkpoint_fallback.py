"""A trial whose recorded checkpoint Tune deleted restores from the newest it kept
(trainables/checkpoint_fallback.py): the choice of folder here; a real Tune restore in
test_search.py (test_crashed_trial_resumes_from_checkpoint_with_same_result)."""

from __future__ import annotations

import pyarrow.fs as pafs
import pytest

tune = pytest.importorskip("ray.tune")

# what Tune hands Trainable.restore: a checkpoint and its metrics
from ray.train._internal.session import _TrainingResult as Restored  # noqa: E402

from trainables.checkpoint_fallback import existing_checkpoint  # noqa: E402


def _folder(trial, name, state_file=True):
    folder = trial / name
    folder.mkdir(parents=True)
    if state_file:
        (folder / "step-000000012.pt").write_bytes(b"PK\x03\x04")


def test_a_checkpoint_that_exists_is_used_as_it_is(tmp_path):
    _folder(tmp_path, "checkpoint_000000")
    result = Restored(tune.Checkpoint(str(tmp_path / "checkpoint_000000")), {"epoch": 1})
    assert existing_checkpoint(result) == (result, None)


def test_a_deleted_checkpoint_gives_way_to_the_newest_kept_one(tmp_path):
    _folder(tmp_path, "checkpoint_000001")
    _folder(tmp_path, "checkpoint_000003")
    _folder(tmp_path, "checkpoint_000004", state_file=False)  # an upload cut short
    (tmp_path / "result.json").write_text("{}\n")
    gone = tune.Checkpoint(str(tmp_path / "checkpoint_000002"), filesystem=pafs.LocalFileSystem())
    result, folder = existing_checkpoint(Restored(gone, {"epoch": 3}))
    assert folder == str(tmp_path / "checkpoint_000003")
    assert result.checkpoint.path == folder and result.metrics == {"epoch": 3}


def test_with_nothing_kept_tune_reports_the_missing_checkpoint_itself(tmp_path):
    _folder(tmp_path, "checkpoint_000000", state_file=False)
    result = Restored(tune.Checkpoint(str(tmp_path / "checkpoint_000001")), {})
    assert existing_checkpoint(result) == (result, None)
