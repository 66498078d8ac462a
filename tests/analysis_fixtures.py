"""A tiny real search for the analysis tests: every way a trial can end (test helpers).

Six trials of four epochs, one at a time, on the tiny synthetic corpus. The base config's
max_lr is 1e20 and lies inside the space, so the search's start point, the first trial,
diverges; a crash injected at epoch 2 (a test trainable) with no restarts crashes the
first trial to get there; ASHA (one rung, at epoch 2: diverged trials never reach it)
stops some others.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import yaml
from search_fixtures import prepare, run_search_cli, write_space

from tune_eegpt import search

SPACE = {
    "max_lr": {"distribution": "choice", "values": [1e20, 2e-3, 3e-3, 5e-3, 1e-2, 2e-2, 3e-2]},
    "pct_start": {"distribution": "uniform", "low": 0.3, "high": 0.5},
    "accum_steps": {"distribution": "choice", "values": [1, 2]},
}
NUM_TRIALS, EPOCHS = 6, 4


def write_diverging_base_config(folder: Path) -> Path:
    raw = {
        "data": {"cache_dir": str(folder / "cache"), "synthetic_subjects": 48},
        "model": {"encoder": "small"},
        "schedule": {"max_lr": 1e20, "pct_start": 0.3},
        "train": {"epochs": EPOCHS, "batch_size": 16, "device": "cpu", "accum_steps": 1},
        "log": {"tensorboard": False},
    }
    path = folder / "base.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def run_small_search(folder: Path, name: str = "exp") -> Path:
    """Runs the search (Ray must be up or is started) and returns the experiment dir."""
    config = write_diverging_base_config(folder)
    prepare(config)
    space = write_space(folder, "analysis", SPACE)
    from trainable_fixtures import crash_once, shipped_by_value

    with shipped_by_value():
        run_search_cli(
            [
                "--config",
                str(config),
                "--space",
                str(space),
                "--num-samples",
                str(NUM_TRIALS),
                "--max-concurrent",
                "1",
                "--grace-period",
                "2",
                "--reduction-factor",
                "2",
                "--max-failures",
                "0",
                "--storage",
                str(folder / "runs"),
                "--name",
                name,
            ],
            trainable=crash_once(folder / "crashed-once", epoch=2),
        )
    return folder / "runs" / name


def interrupt_copy(experiment: Path, target: Path, trial_dir: str, keep_epochs: int) -> Path:
    """A copy of ``experiment`` that looks interrupted while ``trial_dir`` was running:
    its results cut after ``keep_epochs`` (then one epoch replayed, as after a restart,
    and a half-written line), later checkpoints gone, Tune's state saying RUNNING, and
    no tune_eegpt_search.json (searched names then come from params.json)."""
    shutil.copytree(experiment, target)
    trial = target / trial_dir
    lines = (trial / "result.json").read_text().splitlines()
    kept = lines[:keep_epochs] + [lines[keep_epochs - 1]]  # the last kept epoch replayed
    (trial / "result.json").write_text("\n".join(kept) + '\n{"epoch": 3.0, "val_au')
    last_step = json.loads(lines[keep_epochs - 1])["global_step"]
    for ckpt in trial.glob("checkpoint_*"):
        steps = [int(p.stem.split("-")[1]) for p in ckpt.glob("step-*.pt")]
        if any(s > last_step for s in steps):
            shutil.rmtree(ckpt)
    for state_file in target.glob("experiment_state-*.json"):
        state = json.loads(state_file.read_text())
        for entry in state["trial_data"]:
            trial_state = json.loads(entry[0])
            if trial_state.get("relative_logdir") == trial_dir:
                trial_state["status"] = "RUNNING"
                entry[0] = json.dumps(trial_state)
        state_file.write_text(json.dumps(state))
    (target / search.SEARCH_INFO).unlink()
    return target
