"""The schedule doctor on logs and checkpoints written by real training loops: plain PyTorch
loops with each schedule bug and their correct twins (TensorBoard via
torch.utils.tensorboard, CSV, text, torch.save), and our own trainer's run folder."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.tensorboard import SummaryWriter

from probe_fixtures import toy_trainer
from tune_eegpt.doctor import diagnose
from tune_eegpt.doctor.__main__ import main
from tune_eegpt.doctor.findings import Hints
from tune_eegpt.doctor.schedule_fit import fit_with_offset, onecycle_lr
from tune_eegpt.training.checkpoint import checkpoint_name

EPOCHS, BATCHES = 6, 40
RUN = dict(
    n=64, batch_size=8, accum_steps=3, epochs=4, checkpoint_every_steps=5, keep_checkpoints=20
)


def finish(trainer) -> None:
    while not trainer.finished:
        trainer.train_epoch()
        trainer.save_checkpoint(trainer.log_dir / "checkpoints")
    trainer.close()


def torch_loop(
    folder: Path,
    *,
    accum: int = 1,
    per_epoch: bool = False,
    blind_total: bool = False,
    rebuild_at: int | None = None,
    reset_counter_at: int | None = None,
    scheduler: str = "onecycle",
    log: str = "tensorboard",
    log_next: bool = False,
) -> Path:
    """A plain PyTorch loop (tiny linear model, AdamW) that logs the LR of every optimizer
    step and saves a checkpoint at the end; the keyword arguments plant the bugs."""
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    optimizer_steps = EPOCHS * -(-BATCHES // accum)

    def build():
        if scheduler == "step":
            return torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
        if scheduler == "warmup_epochs":  # a warm-up meant in epochs, then held
            return torch.optim.lr_scheduler.LinearLR(opt, start_factor=0.1, total_iters=3)
        if scheduler == "constant":
            return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
        total = EPOCHS if per_epoch else (EPOCHS * BATCHES if blind_total else optimizer_steps)
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-2, total_steps=total)

    sched = build()
    folder.mkdir(parents=True, exist_ok=True)
    writer = SummaryWriter(str(folder)) if log == "tensorboard" else None
    rows, step, logged = [], 0, 0
    for epoch in range(EPOCHS):
        for batch in range(BATCHES):
            x = torch.randn(8, 4)
            (model(x).pow(2).mean() / accum).backward()
            if (batch + 1) % accum and batch + 1 < BATCHES:
                continue
            if rebuild_at is not None and step == rebuild_at:
                sched = build()  # the resume bug: a new scheduler from its first step
            if reset_counter_at is not None and step == reset_counter_at:
                logged = 0  # the resume bug: the step counter starts again
            lr = opt.param_groups[0]["lr"]  # the LR this step uses
            opt.step()
            opt.zero_grad()
            if not per_epoch and scheduler == "onecycle":
                sched.step()
            if log_next:  # the offset bug: the LR read after the scheduler stepped
                lr = opt.param_groups[0]["lr"]
            if writer is not None:
                writer.add_scalar("train/lr", lr, logged)
            rows.append({"step": logged, "epoch": epoch, "lr": lr})
            step, logged = step + 1, logged + 1
        if per_epoch or scheduler != "onecycle":
            sched.step()
    if writer is not None:
        writer.close()
    if log == "csv":
        with (folder / "metrics.csv").open("w", newline="") as fh:
            out = csv.DictWriter(fh, fieldnames=["step", "epoch", "lr"])
            out.writeheader()
            out.writerows(rows)
    if log == "text":
        lines = [f"epoch {r['epoch']} step {r['step']} loss 0.1 lr={r['lr']:.6e}" for r in rows]
        (folder / "train.log").write_text("\n".join(lines) + "\n")
    ckpt = {"model": model.state_dict(), "optimizer": opt.state_dict()}
    ckpt.update(global_step=step, epoch=EPOCHS, scheduler=sched.state_dict())
    torch.save(ckpt, folder / "last.pt")
    return folder


def diagnose_series(x, lr) -> dict:
    return fit_with_offset(x, lr)[0]


def codes(result) -> dict[str, str]:
    return {f.code: f.severity for f in result.findings}


@pytest.mark.parametrize("accum", [1, 4])
@pytest.mark.parametrize("log", ["tensorboard", "csv", "text"])
def test_a_correct_per_step_onecycle_is_healthy_and_reconstructed(tmp_path, accum, log):
    run = torch_loop(tmp_path, accum=accum, log=log)
    result = diagnose([str(run)])  # the folder: its log and its checkpoint
    assert len(result.inputs) == 2
    assert result.healthy, result.lines()
    schedule = result.schedules[0]
    assert schedule["family"] == "one-cycle"
    assert schedule["total_steps"] == EPOCHS * -(-BATCHES // accum)
    assert schedule["anneal_strategy"] == "cos"
    assert schedule["max_lr"] == pytest.approx(1e-2, rel=1e-4)
    assert schedule["div_factor"] == pytest.approx(25, rel=1e-3)  # OneCycleLR's default
    assert schedule["pct_start"] == pytest.approx(0.3, abs=2 / schedule["total_steps"])
    assert schedule["fit_error"] < 1e-5  # torch's own schedule, to float32 logging


@pytest.mark.parametrize("strategy", ["cos", "linear"])
@pytest.mark.parametrize(
    "total, pct, div, final", [(240, 0.3, 25.0, 1e4), (1000, 0.1, 10.0, 100.0)]
)
def test_the_reconstructed_onecycle_is_torchs(strategy, total, pct, div, final):
    opt = torch.optim.SGD(torch.nn.Linear(1, 1).parameters(), lr=1.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=0.01, total_steps=total, pct_start=pct, div_factor=div,
        final_div_factor=final, anneal_strategy=strategy, cycle_momentum=False,
    )  # fmt: skip
    expected = []
    for _ in range(total):
        expected.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    schedule = {"max_lr": 0.01, "total_steps": total, "pct_start": pct, "div_factor": div,
                "final_div_factor": final, "anneal_strategy": strategy}  # fmt: skip
    got = onecycle_lr(schedule, np.arange(total))
    np.testing.assert_allclose(got, expected, rtol=1e-10)
    # and the doctor reconstructs the same schedule from those LRs
    fitted = diagnose_series(np.arange(total), np.array(expected))
    assert fitted["total_steps"] == total and fitted["anneal_strategy"] == strategy
    assert fitted["fit_error"] < 1e-9


def test_a_logged_lr_of_the_next_step_is_found(tmp_path):
    found = diagnose([str(torch_loop(tmp_path, log_next=True, log="csv"))]).findings
    assert [(f.code, f.severity) for f in found] == [("logged_lr_offset", "warning")]
    assert found[0].evidence["offset"] == 1


def test_a_onecycle_stepped_per_epoch_is_found_in_the_log_and_the_checkpoint(tmp_path):
    run = torch_loop(tmp_path, per_epoch=True)
    result = diagnose([str(run)])
    per_epoch = [f for f in result.findings if f.code == "per_epoch_stepping"]
    # one from the log (plateaus), one from the checkpoint (counters)
    assert [f.severity for f in per_epoch] == ["error", "error"]
    assert per_epoch[0].evidence["median_plateau_steps"] == BATCHES
    assert per_epoch[1].evidence == {"scheduler_steps": EPOCHS, "optimizer_steps": 240}


def test_an_accumulation_blind_total_steps_is_found(tmp_path):
    run = torch_loop(tmp_path, accum=4, blind_total=True)
    found = diagnose([str(run)]).findings
    assert [(f.code, f.severity) for f in found] == [("total_steps_mismatch", "warning")]
    assert "still rises" in found[0].message  # the cycle is 4x the run: it ends in warm-up
    # told how long the run is, it is an error, also from the checkpoint alone
    hints = Hints(steps_per_epoch=BATCHES, epochs=EPOCHS, accum=4)
    result = diagnose([str(run)], hints)
    assert [(f.code, f.severity) for f in result.findings] == [
        ("total_steps_mismatch", "error")
    ] * 2
    assert result.findings[0].evidence == {"steps_seen": 60, "expected": 60}
    assert result.findings[1].evidence == {"total_steps": 240, "expected": 60}


def test_a_resume_that_rebuilt_the_scheduler_is_found(tmp_path):
    run = torch_loop(tmp_path, rebuild_at=150)
    result = diagnose([str(run)])  # the log and the checkpoint both say so
    assert [(f.code, f.severity) for f in result.findings] == [("schedule_restarted", "error")] * 2
    assert result.findings[0].evidence["step"] == 150
    assert result.findings[1].evidence == {"scheduler_steps": 90, "optimizer_steps": 240}


def test_a_resume_that_reset_the_step_counter_is_found(tmp_path):
    run = torch_loop(tmp_path, reset_counter_at=150, log="csv")
    result = diagnose([str(run / "metrics.csv")])
    assert codes(result) == {"step_counter_reset": "error"}
    assert result.findings[0].evidence == {"row": 150, "from": 149, "to": 0}
    # the timeline placed the second segment after the first: still one healthy cycle
    assert result.schedules[0]["total_steps"] == 240


def test_a_constant_lr_is_found_and_step_lr_per_epoch_is_healthy(tmp_path):
    assert codes(diagnose([str(torch_loop(tmp_path / "c", scheduler="constant"))])) == {
        "lr_constant": "warning"
    }
    step_lr = diagnose([str(torch_loop(tmp_path / "s", scheduler="step"))])
    assert step_lr.healthy and codes(step_lr) == {"stepped_per_epoch": "info"}


def test_a_warm_up_in_epochs_that_then_holds_is_healthy(tmp_path):
    result = diagnose([str(torch_loop(tmp_path, scheduler="warmup_epochs", log="csv"))])
    assert result.healthy and codes(result) == {"stepped_per_epoch": "info"}
    assert "climbs in 4 plateaus" in result.findings[0].message
    assert result.schedules[0]["family"] == "warm-up, then constant"
    assert result.schedules[0]["peak_step"] == 3 * BATCHES


def test_a_checkpoint_without_step_counter_or_scheduler_is_found(tmp_path):
    model = torch.nn.Linear(2, 1)
    torch.save({"model": model.state_dict()}, tmp_path / "bare.pt")
    found = diagnose([str(tmp_path / "bare.pt")]).findings
    assert [f.code for f in found] == ["missing_global_step"] * 2


def test_our_trainer_run_is_healthy_after_a_resume_into_the_same_folder(tmp_path):
    first = toy_trainer(log_dir=tmp_path / "run", **RUN)
    finish(first)
    second = toy_trainer(log_dir=tmp_path / "run", **RUN)
    second.load_checkpoint(tmp_path / "run" / "checkpoints" / checkpoint_name(5))
    finish(second)
    run = tmp_path / "run"
    last = sorted((run / "checkpoints").glob("*.pt"))[-1]
    result = diagnose([str(run / "steps.csv"), str(run / "tensorboard" / "train"), str(last)])
    assert result.healthy, result.lines()
    assert [s["family"] for s in result.schedules] == ["one-cycle", "one-cycle"]
    assert result.schedules[0]["total_steps"] == second.total_steps


def test_the_command_line_exit_codes_and_json(tmp_path, capsys):
    healthy = torch_loop(tmp_path / "ok")
    broken = torch_loop(tmp_path / "bad", per_epoch=True)
    assert main([str(healthy)]) == 0
    assert "schedule: healthy" in capsys.readouterr().out
    assert main([str(broken), "--json", "--plot", str(tmp_path / "lr.png")]) == 1
    assert (tmp_path / "lr.png").read_bytes()[:4] == b"\x89PNG"
    report = json.loads(capsys.readouterr().out)
    assert report["findings"][0]["code"] == "per_epoch_stepping"
    assert set(report["findings"][0]) == {"code", "severity", "message", "fix", "evidence"}


@pytest.mark.parametrize(
    "name, content, expected",
    [
        ("empty.csv", b"", "not a readable CSV log"),
        ("nolr.csv", b"step,loss\n0,1.0\n", "no learning-rate column"),
        ("damaged.pt", b"PK\x03\x04 not really a zip", "not a readable torch checkpoint"),
        ("notes.log", b"nothing to see\n", "no line carries a learning rate"),
    ],
)
def test_unreadable_input_exits_2_with_one_line(tmp_path, name, content, expected):
    (tmp_path / name).write_bytes(content)
    proc = subprocess.run(
        [sys.executable, "-m", "tune_eegpt.doctor", str(tmp_path / name)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and expected in proc.stderr and name in proc.stderr


def test_a_tensorboard_folder_without_an_lr_tag_names_its_tags(tmp_path):
    with SummaryWriter(str(tmp_path)) as writer:
        writer.add_scalar("train/loss", 1.0, 0)
    with pytest.raises(ValueError, match="train/loss.*--lr-key"):
        diagnose([str(tmp_path)])


def test_a_pickled_checkpoint_needs_the_trust_flag(tmp_path):
    torch.save({"global_step": 3, "extra": Path("x")}, tmp_path / "pickled.pt")
    with pytest.raises(ValueError, match="--trusted-checkpoint"):
        diagnose([str(tmp_path / "pickled.pt")])
    assert diagnose([str(tmp_path / "pickled.pt")], trusted=True).inputs


def test_a_cycle_twice_the_run_is_found_at_half_way(tmp_path):
    run = torch_loop(tmp_path, accum=2, blind_total=True)  # 120 optimizer steps of a 240 cycle
    found = diagnose([str(run)]).findings
    assert [(f.code, f.severity) for f in found] == [("total_steps_mismatch", "warning")]
    assert "1/2" in found[0].message
    assert found[0].evidence["total_steps"] == pytest.approx(240, abs=2)


def test_the_report_line_names_the_trials_with_a_finding(tmp_path):
    from tune_eegpt.doctor.report import check_trials
    from tune_eegpt.shell_command import python_command

    finish(toy_trainer(log_dir=tmp_path / "exp" / "trial_a" / "trainer", **RUN))
    torch_loop(tmp_path / "exp" / "trial_b" / "trainer", per_epoch=True)
    assert check_trials(tmp_path / "exp") == [
        f"schedule: healthy in 1 of 2 trials ({python_command()} -m tune_eegpt.doctor "
        "<trial>/trainer for details)",
        "  trial_b: schedule: error per_epoch_stepping (+1 more)",
    ]
    assert check_trials(tmp_path / "empty") == []


def test_a_wandb_csv_export_is_read_by_its_step_column(tmp_path):
    """W&B exports a run's series as 'Step' and '<run> - <key>' (with __MIN/__MAX twins);
    a log every 4th step makes the mapped 'Step' matter."""
    rows = list(
        csv.DictReader((torch_loop(tmp_path, per_epoch=True, log="csv") / "metrics.csv").open())
    )
    with (tmp_path / "wandb_export.csv").open("w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["Step", "run-1 - train/lr", "run-1 - train/lr__MIN", "run-1 - train/lr__MAX"])
        out.writerows([r["step"], r["lr"], r["lr"], r["lr"]] for r in rows[::4])
    result = diagnose([str(tmp_path / "wandb_export.csv")])
    assert result.series[0].step_key == "Step" and result.series[0].lr_key == "run-1 - train/lr"
    assert codes(result) == {"per_epoch_stepping": "error"}
    # steps 0, 4, ..., 36 of each 40-step epoch (10 if the row order were the steps)
    assert result.findings[0].evidence["median_plateau_steps"] == BATCHES - 3
