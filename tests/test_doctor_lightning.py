"""The schedule doctor on what PyTorch Lightning writes (CSVLogger's metrics.csv,
TensorBoardLogger's events, LearningRateMonitor's lr-AdamW, the .ckpt): the OneCycleLR that
misses "interval": "step", the accumulation-blind total_steps, and their correct twins."""

from pathlib import Path

import pytest
from lightning_runs import BATCHES, EPOCHS, lightning_run

from tune_eegpt.doctor import diagnose
from tune_eegpt.doctor.__main__ import main
from tune_eegpt.doctor.findings import Hints


def inputs(run: Path) -> dict[str, str]:
    """Each thing Lightning wrote, on its own."""
    version = run / "csv" / "version_0"
    return {
        "csv": str(version / "metrics.csv"),
        "tensorboard": str(run / "tb" / "version_0"),
        "checkpoint": str(next((version / "checkpoints").glob("*.ckpt"))),
    }


def found(path: str, hints: Hints | None = None) -> list[tuple[str, str]]:
    return [(f.code, f.severity) for f in diagnose([path], hints).findings]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, dict[str, str]]:
    root = tmp_path_factory.mktemp("lightning")
    wiring = {
        "per_step": {},
        "per_step_accum": {"accum": 4},
        "per_epoch": {"interval": None},  # Lightning's default interval: "epoch"
        "per_epoch_accum": {"interval": None, "accum": 4},
        "blind_total": {"accum": 4, "blind_total": True},
    }
    return {name: inputs(lightning_run(root / name, **kw)) for name, kw in wiring.items()}


@pytest.mark.parametrize("name", ["per_step", "per_step_accum"])
@pytest.mark.parametrize("kind", ["csv", "tensorboard", "checkpoint"])
def test_a_correctly_wired_onecycle_is_healthy(runs, name, kind):
    assert found(runs[name][kind]) == []
    assert main([runs[name][kind]]) == 0
    if kind != "checkpoint":  # the cycle it followed: the run's optimizer steps, not batches
        schedule = diagnose([runs[name][kind]]).schedules[0]
        assert schedule["family"] == "one-cycle"
        assert schedule["total_steps"] == EPOCHS * BATCHES // (4 if "accum" in name else 1)
        assert schedule["max_lr"] == pytest.approx(1e-2)


@pytest.mark.parametrize("name", ["per_epoch", "per_epoch_accum"])
@pytest.mark.parametrize("kind", ["csv", "tensorboard", "checkpoint"])
def test_a_onecycle_without_interval_step_is_stepped_per_epoch(runs, name, kind):
    assert found(runs[name][kind]) == [("per_epoch_stepping", "error")]
    assert main([runs[name][kind]]) == 1
    evidence = diagnose([runs[name][kind]]).findings[0].evidence
    per_epoch = BATCHES // (4 if "accum" in name else 1)  # optimizer steps per epoch
    if kind == "checkpoint":
        assert evidence == {"scheduler_steps": EPOCHS, "optimizer_steps": EPOCHS * per_epoch}
    else:  # the log: one plateau per epoch, still climbing at the end
        assert evidence["plateaus"] == EPOCHS
        assert evidence["median_plateau_steps"] == per_epoch


def test_an_accumulation_blind_total_steps_is_found(runs):
    blind = runs["blind_total"]
    for kind in ("csv", "tensorboard"):  # the log ends in the warm-up of a 4x longer cycle
        assert found(blind[kind]) == [("total_steps_mismatch", "warning")]
    (finding,) = diagnose([blind["checkpoint"]]).findings
    assert (finding.code, finding.severity) == ("total_steps_mismatch", "warning")
    assert finding.evidence == {
        "total_steps": EPOCHS * BATCHES,
        "batches_per_epoch": BATCHES,
        "accum": 4,
        "epochs": EPOCHS,
    }
    # told the epochs, the checkpoint supplies batches and accumulation: both are errors
    both = diagnose([blind["tensorboard"], blind["checkpoint"]], Hints(epochs=EPOCHS))
    assert [(f.code, f.severity) for f in both.findings] == [("total_steps_mismatch", "error")] * 2
    assert both.findings[1].evidence == {"total_steps": 240, "expected": 60}
    # and the correct twin, told the same, stays healthy
    twin = runs["per_step_accum"]
    assert diagnose([twin["tensorboard"], twin["checkpoint"]], Hints(epochs=EPOCHS)).healthy


def test_the_run_folder_reads_every_log_and_the_checkpoint(runs):
    folder = str(Path(runs["per_epoch"]["checkpoint"]).parents[1])  # csv/version_0
    result = diagnose([folder])
    assert [i["kind"] for i in result.inputs] == ["log", "checkpoint"]
    assert [f.code for f in result.findings] == ["per_epoch_stepping"] * 2
