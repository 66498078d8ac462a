"""The per-step log holds each global_step once after a resume from an older checkpoint and
after a hard kill (steps.csv and TensorBoard, read as TensorBoard reads them)."""

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from tensorboard_view import tensorboard_view

from probe_fixtures import toy_trainer
from tune_eegpt.training.checkpoint import checkpoint_name
from tune_eegpt.training.step_log import read_steps_csv

TESTS = Path(__file__).parent
SETTINGS = dict(
    n=64, batch_size=8, accum_steps=1, epochs=4, checkpoint_every_steps=5, keep_checkpoints=20
)


def finish(trainer) -> None:
    while not trainer.finished:
        trainer.train_epoch()
        if trainer.log_dir is not None:
            trainer.save_checkpoint(trainer.log_dir / "checkpoints")
    trainer.close()


def assert_logged_once(folder: Path, reference) -> None:
    """steps.csv and TensorBoard hold every step of ``reference`` (a never-stopped run's
    step_log) once, with its LR; validation once per epoch end."""
    rows = read_steps_csv(folder / "steps.csv")
    assert [int(r["global_step"]) for r in rows] == [r["global_step"] for r in reference]
    assert [float(r["lr"]) for r in rows] == [r["lr"] for r in reference]
    train = tensorboard_view(folder / "tensorboard" / "train")
    assert [s for s, _ in train["train/lr"]] == [r["global_step"] for r in reference]
    assert [v for _, v in train["train/lr"]] == pytest.approx([r["lr"] for r in reference])
    val = tensorboard_view(folder / "tensorboard" / "val")
    steps_per_epoch = len(reference) // SETTINGS["epochs"]
    epoch_ends = [steps_per_epoch * (e + 1) for e in range(SETTINGS["epochs"])]
    assert [s for s, _ in val["val/auroc"]] == epoch_ends


def test_resume_from_an_older_checkpoint_logs_each_step_once(tmp_path):
    reference = toy_trainer(**SETTINGS)
    finish(reference)

    first = toy_trainer(log_dir=tmp_path / "run", **SETTINGS)
    finish(first)  # the whole run, then a resume from step 10 (mid-epoch 2) into its folder
    second = toy_trainer(log_dir=tmp_path / "run", **SETTINGS)
    second.load_checkpoint(tmp_path / "run" / "checkpoints" / checkpoint_name(10))
    finish(second)
    # and a resume from an epoch end (step 16: its validation is kept, not repeated)
    third = toy_trainer(log_dir=tmp_path / "run", **SETTINGS)
    third.load_checkpoint(tmp_path / "run" / "checkpoints" / checkpoint_name(16))
    assert third.batch_in_epoch == 0 and third.epoch == 2
    finish(third)
    assert_logged_once(tmp_path / "run", reference.step_log)


_KILLED_RUN = """
import os, signal, sys
sys.path.insert(0, {tests!r})
from probe_fixtures import toy_trainer
from tensorboard_view import tensorboard_view
trainer = toy_trainer(log_dir={run!r}, **{settings!r})
def kill_at_step_23(t):
    if t.global_step == 23:
        os.kill(os.getpid(), signal.SIGKILL)
while not trainer.finished:
    trainer.train_epoch(on_step=kill_at_step_23)
"""


@pytest.mark.slow
def test_a_killed_run_loses_no_rows_and_its_resume_logs_each_step_once(tmp_path):
    run = tmp_path / "run"
    script = _KILLED_RUN.format(tests=str(TESTS), run=str(run), settings=SETTINGS)
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], timeout=120)
    assert proc.returncode == -signal.SIGKILL
    rows = read_steps_csv(run / "steps.csv")
    assert [int(r["global_step"]) for r in rows] == list(range(23))  # nothing lost

    reference = toy_trainer(**SETTINGS)
    finish(reference)
    resumed = toy_trainer(log_dir=run, **SETTINGS)
    resumed.load_checkpoint(run / "checkpoints")  # the latest: step 20
    assert resumed.global_step == 20
    finish(resumed)
    assert_logged_once(run, reference.step_log)


def test_a_row_cut_short_is_dropped_on_resume(tmp_path):
    trainer = toy_trainer(log_dir=tmp_path, **SETTINGS)
    trainer.train_epoch()
    trainer.save_checkpoint(tmp_path / "checkpoints")
    trainer.close()
    with (tmp_path / "steps.csv").open("a") as fh:
        fh.write("8,1,0.00")  # a kill in the middle of a row
    again = toy_trainer(log_dir=tmp_path, **SETTINGS)
    again.load_checkpoint(tmp_path / "checkpoints")
    again.train_epoch()
    again.close()
    steps = [int(r["global_step"]) for r in read_steps_csv(tmp_path / "steps.csv")]
    assert steps == list(range(16))
    assert os.path.getsize(tmp_path / "steps.csv") > 0
