import pytest
import yaml

from tune_eegpt import train
from tune_eegpt.training.checkpoint import list_checkpoints, load_checkpoint_file


@pytest.mark.slow
def test_train_cli_runs_checkpoints_and_resumes(tiny_base, tmp_path, capsys):
    folder, config = tiny_base
    out = tmp_path / "run"
    assert train.main(["--config", str(config), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "epoch 4/4" in printed and "best val_auroc" in printed
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["log"]["out_dir"] == str(out)
    checkpoints = list_checkpoints(out / "checkpoints")
    last = load_checkpoint_file(checkpoints[-1])
    assert last["epoch"] == 4 and last["global_step"] == last["total_steps"]
    # resuming a finished run trains nothing more and says where it stands
    assert train.main(["--config", str(config), "--out", str(out),
                       "--resume", str(checkpoints[-2])]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "resumed from" in printed and "epoch 3, global_step" in printed
    assert "epoch 4/4" in printed and "epoch 1/4" not in printed


def test_train_cli_rejects_a_bad_config(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  accum_steps: 0\n")
    assert train.main(["--config", str(bad)]) == 2
    assert "train.accum_steps=0 is not allowed" in capsys.readouterr().err
