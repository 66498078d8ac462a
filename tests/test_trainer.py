import struct

import pytest
import torch
from torch import nn

from probe_fixtures import record_lrs_used, toy_config, toy_data, toy_head, toy_trainer
from tune_eegpt.training.checkpoint import CheckpointError, list_checkpoints, load_checkpoint_file
from tune_eegpt.training.trainer import Diverged, ProbeTrainer


def read_tensorboard_scalars(folder, tag):
    """(step, value) pairs of ``tag`` from tensorboardX event files (TFRecord framing)."""
    from tensorboardX.proto import event_pb2

    found = []
    for path in sorted(folder.rglob("events.out.tfevents.*")):
        data = path.read_bytes()
        pos = 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos : pos + 8])
            event = event_pb2.Event.FromString(data[pos + 12 : pos + 12 + length])
            pos += 12 + length + 4
            for value in event.summary.value:
                if value.tag == tag:
                    found.append((event.step, value.simple_value))
    return found


class TinyEncoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(6, 6)
        self.drop = nn.Dropout(0.5)
        self.modes = []

    def forward(self, x):
        self.modes.append(self.training)
        return self.drop(self.proj(x))


def test_encoder_stays_frozen_in_eval_mode_and_unchanged():
    encoder = TinyEncoder()
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    cfg = toy_config(epochs=2)
    trainer = ProbeTrainer(cfg, toy_head(), toy_data(50), toy_data(20, seed=1), encoder=encoder)
    optimized = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    assert not any(id(p) in optimized for p in encoder.parameters())
    assert all(not p.requires_grad for p in encoder.parameters())
    while not trainer.finished:
        trainer.train_epoch()
    assert encoder.modes and not any(encoder.modes)  # never in train mode
    for k, v in encoder.state_dict().items():
        assert torch.equal(v, before[k])


def test_logged_lr_is_the_one_the_optimizer_used(tmp_path):
    # Historical bug 5: logging scheduler.get_last_lr() after the step logged the next LR.
    trainer = toy_trainer(n=50, batch_size=8, accum_steps=2, epochs=2, log_dir=tmp_path)
    used = record_lrs_used(trainer)
    while not trainer.finished:
        trainer.train_epoch()
    trainer.close()
    assert [r["lr"] for r in trainer.step_log] == used
    logged = read_tensorboard_scalars(tmp_path, "train/lr")
    assert [step for step, _ in logged] == list(range(len(used)))
    assert [v for _, v in logged] == pytest.approx(used, rel=1e-6)  # float32 in the event file
    csv_lrs = [
        float(line.split(",")[2]) for line in (tmp_path / "steps.csv").read_text().split()[1:]
    ]
    assert csv_lrs == used


def test_checkpoint_carries_global_step(tmp_path):
    # Historical bug 4: checkpoints without global_step restarted the schedule from zero.
    trainer = toy_trainer(n=50, batch_size=8, accum_steps=2, epochs=3)
    trainer.train_epoch()
    path = trainer.save_checkpoint(tmp_path)
    assert path.name == "step-000000004.pt"
    state = load_checkpoint_file(path)
    assert state["global_step"] == 4
    assert state["scheduler"]["last_epoch"] == 4
    fresh = toy_trainer(n=50, batch_size=8, accum_steps=2, epochs=3)
    fresh.load_checkpoint(tmp_path)  # a folder resumes from its latest checkpoint
    assert fresh.global_step == 4
    assert fresh.optimizer.param_groups[0]["lr"] == trainer.optimizer.param_groups[0]["lr"]


def test_resume_continues_the_epoch_count(tmp_path):
    # Historical bug 2: start_epoch reset to 0 on resume, so the schedule overran.
    trainer = toy_trainer(n=50, epochs=4)
    trainer.train_epoch()
    trainer.train_epoch()
    trainer.save_checkpoint(tmp_path)
    resumed = toy_trainer(n=50, epochs=4)
    resumed.load_checkpoint(tmp_path)
    assert resumed.epoch == 2
    epochs = [resumed.train_epoch()["epoch"] for _ in range(10) if not resumed.finished]
    assert epochs == [3.0, 4.0]
    assert resumed.global_step == resumed.total_steps


def test_loss_is_scaled_by_the_real_size_of_each_accumulation_window():
    # 30 rows: batch 4 x accum 3 gives windows of 12, 12 and 6 rows, exactly the batches
    # of batch 12 x accum 1, so both runs must take the same optimizer steps.
    data = toy_data(30)
    runs = []
    for batch_size, accum in ((4, 3), (12, 1)):
        cfg = toy_config(batch_size=batch_size, accum_steps=accum, epochs=2, pct_start=0.4)
        trainer = ProbeTrainer(cfg, toy_head(), data, None)
        while not trainer.finished:
            trainer.train_epoch()
        runs.append(trainer)
    assert runs[0].total_steps == runs[1].total_steps == 6
    for a, b in zip(runs[0].head.parameters(), runs[1].head.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_fp16_skipped_steps_move_neither_schedule_nor_global_step():
    trainer = toy_trainer(n=32, batch_size=8, epochs=4, precision="fp16")
    # an infinite loss scale: every scaled gradient overflows, so every step is skipped
    trainer.scaler = torch.amp.GradScaler("cpu", init_scale=float("inf"))
    head_before = [p.detach().clone() for p in trainer.head.parameters()]
    used = record_lrs_used(trainer)
    trainer.train_epoch()
    assert trainer.global_step == 0
    assert trainer.scheduler.last_epoch == 0
    assert used == [] and trainer.step_log == []
    for a, b in zip(head_before, trainer.head.parameters(), strict=True):
        assert torch.equal(a, b)
    trainer.scaler = torch.amp.GradScaler("cpu")  # a sane scale: the 4 steps of epoch 2 count
    trainer.train_epoch()
    assert trainer.global_step == trainer.scheduler.last_epoch == 4


def test_divergence_is_reported_not_trained_through():
    trainer = toy_trainer(n=50, max_lr=1e30, epochs=2)
    with pytest.raises(Diverged, match="max_lr=1e\\+30"):
        for _ in range(2):
            trainer.train_epoch()
    assert trainer.diverged and trainer.finished


def test_checkpoint_from_another_config_is_refused_with_field_names(tmp_path):
    trainer = toy_trainer(n=50, max_lr=1e-2)
    trainer.train_epoch()
    trainer.save_checkpoint(tmp_path)
    other = toy_trainer(n=50, max_lr=3e-3, pct_start=0.2)
    with pytest.raises(CheckpointError) as info:
        other.load_checkpoint(tmp_path)
    text = str(info.value)
    assert "schedule.max_lr (checkpoint 0.01, now 0.003)" in text
    assert "schedule.pct_start" in text
    assert "train.epochs" not in text


def test_truncated_checkpoint_gives_a_clear_error(tmp_path):
    trainer = toy_trainer(n=50)
    trainer.train_epoch()
    path = trainer.save_checkpoint(tmp_path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"step-000000007.pt: cannot read this checkpoint"):
        toy_trainer(n=50).load_checkpoint(path)


def test_a_failed_save_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    trainer = toy_trainer(n=50, epochs=3)
    trainer.train_epoch()
    first = trainer.save_checkpoint(tmp_path)
    good = first.read_bytes()

    def broken_save(obj, fh, *args, **kwargs):
        fh.write(b"partial")
        raise OSError("disk full")

    trainer.global_step = 7  # the same name again: the rename must not have happened
    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        trainer.save_checkpoint(tmp_path)
    assert first.read_bytes() == good
    assert list_checkpoints(tmp_path) == [first]
    assert [p.name for p in tmp_path.iterdir()] == [first.name]  # no temporary file left
