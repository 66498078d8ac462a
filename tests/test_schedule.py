import csv
import math

import pytest

from probe_fixtures import onecycle_cos_lr, record_lrs_used, toy_trainer
from tune_eegpt import schedule as schedule_cli
from tune_eegpt.config import ConfigError
from tune_eegpt.training.onecycle import check_warmup, dry_run, schedule_length


@pytest.mark.parametrize(
    "n, batch_size, accum, epochs",
    [
        (50, 8, 3, 3),  # 7 batches, not divisible by 3: last window of one batch
        (40, 8, 8, 6),  # accum_steps (8) larger than the batches per epoch (5)
        (64, 4, 2, 1),  # a single epoch
        (50, 8, 1, 2),  # no accumulation
    ],
)
def test_lr_of_every_step_follows_onecycle_formula(n, batch_size, accum, epochs):
    trainer = toy_trainer(n=n, batch_size=batch_size, accum_steps=accum, epochs=epochs)
    used = record_lrs_used(trainer)
    while not trainer.finished:
        trainer.train_epoch()
    batches = math.ceil(n / batch_size)
    expected_total = math.ceil(batches / accum) * epochs
    assert trainer.total_steps == expected_total
    assert trainer.global_step == expected_total
    assert len(used) == expected_total
    for step, lr in enumerate(used):
        assert lr == pytest.approx(onecycle_cos_lr(step, expected_total, 1e-2, 0.3), rel=1e-9)
    assert used[-1] == pytest.approx(1e-2 / 25 / 1e4, rel=1e-12)  # ends on the floor


def test_scheduler_is_stepped_per_optimizer_step_not_per_epoch():
    # Historical bug 1: scheduler.step() once per epoch left the LR in warm-up forever.
    trainer = toy_trainer(n=50, batch_size=8, accum_steps=1, epochs=3)
    used = record_lrs_used(trainer)
    trainer.train_epoch()
    assert trainer.scheduler.last_epoch == trainer.steps_per_epoch == 7
    assert len(set(used)) == 7  # every step of the epoch had its own LR


def test_total_steps_counts_gradient_accumulation():
    # Historical bug 3: total_steps = batches * epochs ignored accum_steps, so the
    # schedule never left its warm-up half (or stepped past its end).
    assert schedule_length(10, 4, 3) == (3, 9)
    assert schedule_length(10, 1, 3) == (10, 30)
    trainer = toy_trainer(n=80, batch_size=8, accum_steps=4, epochs=3)
    assert trainer.scheduler.total_steps == 9


def test_full_run_never_steps_past_the_schedule():
    trainer = toy_trainer(n=50, batch_size=8, accum_steps=3, epochs=4)
    while not trainer.finished:
        trainer.train_epoch()  # torch raises "Tried to step N times" if we overstep
    assert trainer.scheduler.last_epoch == trainer.total_steps


def test_dry_run_equals_what_the_trainer_uses():
    trainer = toy_trainer(n=50, batch_size=8, accum_steps=2, epochs=3, pct_start=0.25)
    used = record_lrs_used(trainer)
    while not trainer.finished:
        trainer.train_epoch()
    run = dry_run(trainer.cfg.schedule, trainer.batches_per_epoch, 2, 3)
    assert list(run.lrs) == used


def test_warmup_ending_before_first_step_is_refused():
    with pytest.raises(ConfigError, match=r"pct_start=0.1 with total_steps=10"):
        check_warmup(0.1, batches_per_epoch=10, accum_steps=1, epochs=1)
    check_warmup(0.11, batches_per_epoch=10, accum_steps=1, epochs=1)


@pytest.mark.slow
def test_schedule_cli_without_config(tmp_path, capsys):
    csv_path, png = tmp_path / "lr.csv", tmp_path / "lr.png"
    code = schedule_cli.main(
        [
            "--max-lr",
            "3e-3",
            "--pct-start",
            "0.1",
            "--accum-steps",
            "4",
            "--batches-per-epoch",
            "2900",
            "--epochs",
            "20",
            "--csv",
            str(csv_path),
            "--plot",
            str(png),
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "steps per epoch     725" in out
    assert "total steps         14500" in out
    with csv_path.open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 14500
    assert (rows[0]["global_step"], rows[0]["epoch"]) == ("0", "0")
    assert float(rows[0]["lr"]) == pytest.approx(3e-3 / 25, rel=1e-12)
    assert rows[725]["epoch"] == "1"
    for k in (0, 1000, 1449, 7000, 14499):
        assert float(rows[k]["lr"]) == pytest.approx(onecycle_cos_lr(k, 14500, 3e-3, 0.1))
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_schedule_cli_reports_bad_values(capsys):
    assert schedule_cli.main(["--batches-per-epoch", "100", "--pct-start", "1.5"]) == 2
    assert "pct_start=1.5 is not allowed: expected a number in (0, 1)" in capsys.readouterr().err
