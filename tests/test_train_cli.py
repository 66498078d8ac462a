import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from tensorboard_view import tensorboard_view

from tune_eegpt import train
from tune_eegpt.training.checkpoint import list_checkpoints, load_checkpoint_file
from tune_eegpt.training.step_log import read_steps_csv


@pytest.mark.slow
def test_train_cli_runs_checkpoints_and_resumes(tiny_base, tmp_path, capsys):
    folder, config = tiny_base
    out = tmp_path / "run"
    assert train.main(["--config", str(config), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "epoch 4/4" in printed and "best val_auroc" in printed
    assert "schedule: healthy" in printed  # the doctor on the run's own logs
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["log"]["out_dir"] == str(out)
    checkpoints = list_checkpoints(out / "checkpoints")
    last = load_checkpoint_file(checkpoints[-1])
    assert last["epoch"] == 4 and last["global_step"] == last["total_steps"]
    # resuming a finished run trains nothing more and says where it stands
    assert (
        train.main(["--config", str(config), "--out", str(out), "--resume", str(checkpoints[-2])])
        == 0
    )
    printed = capsys.readouterr().out
    resumed_at = load_checkpoint_file(checkpoints[-2])["global_step"]
    assert (
        f"epoch 3, global_step {resumed_at} ({resumed_at} optimizer steps taken, logged as "
        f"steps 0..{resumed_at - 1}; the next is step {resumed_at})\n"
    ) in printed
    assert "epoch 4/4" in printed and "epoch 1/4" not in printed
    assert "schedule: healthy" in printed  # also after the resume into the same folder


def test_train_cli_rejects_a_bad_config(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  accum_steps: 0\n")
    assert train.main(["--config", str(bad)]) == 2
    assert "train.accum_steps=0 is not allowed" in capsys.readouterr().err


def _long_run_config(tiny_base, tmp_path, **train) -> Path:
    _, config = tiny_base
    raw = yaml.safe_load(config.read_text())
    raw["train"].update({"epochs": 400, **train})
    raw["log"] = {"tensorboard": True}
    path = tmp_path / "long.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _wait_for_training(proc: subprocess.Popen, steps_csv: Path, past_step: int) -> str:
    """Waits until the run has logged ``past_step``; returns what it printed before training."""
    printed = ""
    for line in proc.stdout:  # unbuffered: "N training rows ..." comes just before step 0
        printed += line
        if "training rows" in line:
            break
    while proc.poll() is None:
        rows = read_steps_csv(steps_csv)
        if rows and int(rows[-1]["global_step"]) >= past_step:
            return printed
        time.sleep(0.02)
    raise AssertionError(f"the run ended before step {past_step}: {proc.communicate()}")


@pytest.mark.slow
def test_ctrl_c_stops_promptly_and_prints_the_exact_resume_command(tiny_base, tmp_path):
    # The hang this guards against (tensorboardX's writer thread, its queue lock left held by
    # an interrupt inside add_scalar) showed up in 2 of 7 tries: interrupt several times, at
    # different moments, each time continuing with the command the previous run printed.
    out = tmp_path / "run"
    config = _long_run_config(tiny_base, tmp_path, checkpoint_every_steps=7)
    command = [sys.executable, "-m", "tune_eegpt.train", "--config", str(config)]
    command += ["--out", str(out)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PATH": "/usr/bin:/bin"}  # no venv active
    resumed_step = 0
    for attempt, delay in enumerate([0.0, 0.02, 0.1, 0.3, 0.7]):
        proc = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        before = _wait_for_training(proc, out / "steps.csv", past_step=resumed_step + 10)
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGINT)
        try:
            stdout, stderr = proc.communicate(timeout=60)  # hangs forever when it goes wrong
        except subprocess.TimeoutExpired:
            proc.kill()
            raise AssertionError(f"attempt {attempt}: still running 60 s after Ctrl-C") from None
        assert proc.returncode == 130, stderr
        lines = stderr.strip().splitlines()
        assert len(lines) == 1, stderr
        match = re.fullmatch(
            r"interrupted at global_step (\d+) \((\d+) optimizer steps taken, logged as steps "
            r"0\.\.(\d+)\); last checkpoint (\S+) \(global_step (\d+): the run goes on from "
            r"step \5\); resume with: (.+)",
            lines[0],
        )
        assert match, lines[0]
        # one count: global_step N is N steps, the rows 0..N-1 of steps.csv, the last one N-1
        taken = int(match.group(1))
        assert int(match.group(2)) == taken and int(match.group(3)) == taken - 1
        assert int(read_steps_csv(out / "steps.csv")[-1]["global_step"]) == taken - 1
        last = list_checkpoints(out / "checkpoints")[-1]
        assert match.group(4) == str(last)
        assert int(match.group(5)) == load_checkpoint_file(last)["global_step"] <= taken
        expected = ["-m", "tune_eegpt.train", "--config", str(out / "config.yaml")]
        printed = shlex.split(match.group(6))
        assert printed[1:] == [*expected, "--resume", str(last)]
        assert Path(printed[0]).absolute() == Path(sys.executable)  # not the shell's python
        command = ["bash", "-c", f"exec {match.group(6)}"]  # as pasted into a shell
        resumed_step = load_checkpoint_file(last)["global_step"]
        assert ("resumed from" in before + stdout) == (attempt > 0)
    # the logs of five interrupted pieces: every step once, in order, CSV and TensorBoard alike
    steps = [int(r["global_step"]) for r in read_steps_csv(out / "steps.csv")]
    assert steps == list(range(len(steps))) and len(steps) > 50
    board = tensorboard_view(out / "tensorboard" / "train")["train/lr"]
    assert [s for s, _ in board] == steps


@pytest.mark.slow
def test_a_second_run_into_a_folder_with_a_run_is_refused(tiny_base, tmp_path, capsys):
    _, config = tiny_base
    out = tmp_path / "run"
    assert train.main(["--config", str(config), "--out", str(out), "--resume", str(config)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: {config}: not a trainer checkpoint: those are files that torch.save writes "
        "(zip archives named step-<global_step>.pt, in a run's checkpoints/ folder); this one "
        "is a text file (it starts with 'data')"
    )
    assert not out.exists()  # refused before anything was written
    assert train.main(["--config", str(config), "--out", str(out)]) == 0
    before = {p.name: p.read_bytes() for p in (out / "checkpoints").iterdir()}
    rows = (out / "steps.csv").read_text()
    capsys.readouterr()
    assert train.main(["--config", str(config), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    last = list_checkpoints(out / "checkpoints")[-1].name
    assert err == (
        f"error: {out} already holds a run (checkpoints up to {last}): continue it "
        f"with --resume {out / 'checkpoints'}, or give a new folder with --out\n"
    )
    assert {p.name: p.read_bytes() for p in (out / "checkpoints").iterdir()} == before
    assert (out / "steps.csv").read_text() == rows
    # resuming a checkpoint of another run into it is refused too
    other = tmp_path / "other"
    assert train.main(["--config", str(config), "--out", str(other)]) == 0
    capsys.readouterr()
    again = ["--config", str(config), "--out", str(out), "--resume", str(other / "checkpoints")]
    assert train.main(again) == 2
    assert f"is not from {out}, which holds another run" in capsys.readouterr().err
    # and a checkpoint resumed under a config that changes the outcome, before any data work
    raw = yaml.safe_load(config.read_text())
    raw["schedule"]["max_lr"] = 1e-3
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump(raw))
    third = tmp_path / "third"
    resume = ["--resume", str(other / "checkpoints")]
    assert train.main(["--config", str(changed), "--out", str(third), *resume]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --resume ") and err.count("\n") == 1
    assert "differing fields: schedule.max_lr (checkpoint 0.003, now 0.001)" in err
    assert not third.exists()


def test_the_unedited_paper_config_says_what_to_fill_in(tmp_path, capsys):
    paper = Path(__file__).parents[1] / "tune_eegpt" / "configs" / "paper_aligned.yaml"
    out = tmp_path / "run"
    assert train.main(["--config", str(paper), "--out", str(out)]) == 2
    assert capsys.readouterr().err == (
        f"error: {paper}: the large encoder needs real inputs; fill in data.data_root (TUAB's "
        "edf folder, holding train/ and eval/) and model.checkpoint (the EEGPT weights, "
        "eegpt_mcae_58chs_4s_large4E.ckpt), or set model.random_large_encoder: true to run "
        "it untrained and on the synthetic corpus\n"
    )
    assert not out.exists()


@pytest.mark.parametrize("flag", ["--resum", "--conf", "--out-dir"])
def test_abbreviated_flags_are_not_taken_for_others(flag, tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        train.main(["--config", "x.yaml", flag, str(tmp_path)])
    assert info.value.code == 2
    assert f"unrecognized arguments: {flag}" in capsys.readouterr().err


def test_bad_values_get_one_error_line_before_any_work(tiny_base, tmp_path, capsys):
    _, config = tiny_base
    out = tmp_path / "run"
    cases = {
        ("--workers", "0"): "error: --workers=0 is not allowed: expected an integer >= 1",
        ("--resume", str(tmp_path / "nope.pt")): f"error: --resume {tmp_path / 'nope.pt'}: "
        "no such file or folder",
    }
    for extra, message in cases.items():
        assert train.main(["--config", str(config), "--out", str(out), *extra]) == 2
        assert capsys.readouterr().err.strip() == message
    raw = yaml.safe_load(config.read_text())
    raw["data"]["data_root"] = str(tmp_path / "no-tuab")
    missing = tmp_path / "missing.yaml"
    missing.write_text(yaml.safe_dump(raw))
    assert train.main(["--config", str(missing), "--out", str(out)]) == 2
    assert capsys.readouterr().err == (
        f"error: {missing}: data.data_root={str(tmp_path / 'no-tuab')!r}: no such folder\n"
    )
    assert not out.exists()
