"""The schedule doctor on Hugging Face Trainer runs (committed as transformers wrote them:
tests/fixtures/hf_trainer/make_runs.py): its linear and cosine warm-up schedules, with and
without accumulation, are healthy, and its checkpoint-N folders are read as one checkpoint."""

import shutil
from pathlib import Path

import pytest

from tune_eegpt.doctor import diagnose
from tune_eegpt.doctor.__main__ import main

RUNS = Path(__file__).parent / "fixtures" / "hf_trainer"
STEPS = {"linear_1": 240, "cosine_1": 240, "linear_4": 60}  # optimizer steps of each run


@pytest.mark.parametrize("name", sorted(STEPS))
def test_a_hugging_face_trainer_run_is_healthy_and_its_schedule_reconstructed(name):
    run = RUNS / name
    result = diagnose([str(run)])
    assert [i["kind"] for i in result.inputs] == ["log", "checkpoint", "hints"]
    # the only note: HF numbers its steps from 1 (the LR logged is the one the step used)
    assert [(f.code, f.severity) for f in result.findings] == [("logged_lr_offset", "info")]
    assert result.findings[0].evidence["offset"] == -1
    assert main([str(run)]) == 0
    (schedule,) = result.schedules
    assert schedule["family"] == "one-cycle" and schedule["max_lr"] == pytest.approx(1e-3)
    assert schedule["warmup_strategy"] == "linear"  # HF warms up linearly, for both kinds
    assert schedule["anneal_strategy"] == ("cos" if name.startswith("cosine") else "linear")
    # HF's LR reaches 0 one step after the last: the cycle is the run's steps + 1
    assert schedule["total_steps"] == STEPS[name] + 1
    assert schedule["fit_error"] < 1e-6


def test_a_checkpoint_folder_is_one_checkpoint_with_the_runs_length():
    folder = RUNS / "linear_4" / "checkpoint-60"
    result = diagnose([str(folder)])
    assert result.healthy and result.findings == []
    assert result.inputs[0]["what"] == (
        "global_step 60, epoch 6, optimizer steps 60, scheduler state"
    )
    assert result.inputs[1] == {
        "kind": "hints",
        "source": "checkpoint's run length",
        "what": "the run takes 60 optimizer steps",
    }


def test_a_damaged_trainer_state_exits_2_naming_the_file(tmp_path, capsys):
    folder = tmp_path / "checkpoint-60"
    shutil.copytree(RUNS / "linear_4" / "checkpoint-60", folder)
    (folder / "trainer_state.json").write_text('{"global_step": 6')  # cut short
    assert main([str(folder)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(folder / "trainer_state.json") in err[0]
    assert "not readable JSON" in err[0]
