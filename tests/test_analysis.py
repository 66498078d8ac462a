"""Analysis end to end on an experiment made by a real small search (real Ray, Optuna, ASHA)."""

import os
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
from analysis_fixtures import EPOCHS, NUM_TRIALS, interrupt_copy, run_small_search
from sklearn.metrics import roc_auc_score

from analysis.__main__ import main
from analysis.confirm import run_confirmation
from analysis.evaluate import bootstrap_intervals, evaluate_winner
from analysis.export import configuration_of, run_config_for
from analysis.load import load_experiment
from analysis.selection import rank_configurations, select_configurations, selection_lines
from tune_eegpt.config import RunConfig
from tune_eegpt.shell_command import python_command

ray = pytest.importorskip("ray")
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def experiment_dir(tmp_path_factory):
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False)
    try:
        yield run_small_search(tmp_path_factory.mktemp("analysis"))
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def experiment(experiment_dir):
    return load_experiment(experiment_dir)


@pytest.mark.slow
def test_trials_frame_has_a_row_per_trial_and_how_each_ended(experiment, experiment_dir):
    trials = experiment.trials
    assert len(trials) == NUM_TRIALS == len(list(experiment_dir.glob("*/result.json")))
    assert trials["trial_id"].is_unique
    assert sorted(experiment.params) == ["accum_steps", "max_lr", "pct_start"]
    states = trials.set_index("trial_id")["end_state"]
    assert set(states) >= {"finished", "stopped", "diverged", "crashed"}, states.to_dict()
    assert (trials.loc[trials["end_state"] == "diverged", "max_lr"] == 1e20).all()
    crashed = trials[trials["end_state"] == "crashed"]
    assert all((experiment_dir / d / "error.txt").is_file() for d in crashed["trial_dir"])
    assert (trials.loc[trials["end_state"] == "finished", "epochs_run"] == EPOCHS).all()
    assert (trials.loc[trials["end_state"] == "stopped", "epochs_run"] < EPOCHS).all()
    history = experiment.history
    assert not history.duplicated(["trial_id", "epoch"]).any()
    for _, t in trials[trials["end_state"] == "finished"].iterrows():
        h = history[history["trial_id"] == t["trial_id"]]
        assert t["best_val_auroc"] == h["val_auroc"].max()
        assert t["last_val_auroc"] == h["val_auroc"].iloc[-1]
        best = h.loc[h["val_auroc"].idxmax()]
        assert t["best_epoch"] == best["epoch"]
        assert t["val_bal_acc_at_best"] == best["val_bal_acc"]
        step = int(best["global_step"])
        assert t["best_checkpoint_file"].endswith(f"step-{step:09d}.pt")
        assert Path(t["best_checkpoint"]).name.startswith("checkpoint_")


@pytest.mark.slow
def test_selection_matches_a_threshold_between_known_values(experiment):
    params = experiment.params
    ranked = rank_configurations(experiment.trials, params)
    usable = ranked[ranked["end_state"] != "diverged"]["best_val_auroc"].to_numpy()
    assert len(usable) >= 3 and usable[1] > usable[2]
    threshold = float((usable[1] + usable[2]) / 2)
    selected = select_configurations(experiment.trials, params, threshold)
    assert list(selected["trial_id"]) == list(ranked["trial_id"].head(2))
    assert (selected["best_val_auroc"] >= threshold).all()
    text = "\n".join(selection_lines(experiment.trials, params, threshold))
    assert f"2 configuration(s) reach val_auroc >= {threshold}" in text
    none = "\n".join(selection_lines(experiment.trials, params, 0.999))
    assert "NO configuration reaches val_auroc >= 0.999" in none
    assert "The 3 closest" in none


@pytest.mark.slow
def test_report_writes_frames_plots_and_a_config_that_trains(experiment_dir, tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["report", str(experiment_dir), "--out", str(out), "--threshold", "0.6"]) == 0
    printed = capsys.readouterr().out
    assert "trials: 6" in printed and "best_config" in printed
    trials = pd.read_parquet(out / "trials.parquet")
    history = pd.read_parquet(out / "history.parquet")
    assert len(trials) == NUM_TRIALS and len(history) >= NUM_TRIALS
    for name in ("val_auroc_vs_params", "learning_curves", "rung_survival"):
        assert (out / "plots" / f"{name}.png").stat().st_size > 5000
    assert (out / "best_config_schedule.png").is_file()
    assert "total steps" in (out / "best_config_schedule.txt").read_text()
    # Optuna's own importances over the study's complete trials, read from its journal
    study = optuna.load_study(
        study_name=experiment_dir.name,
        storage=optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(experiment_dir / "optuna.journal"))
        ),
    )
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len(complete) >= 3, [t.state.name for t in study.trials]
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
    found = optuna.importance.get_param_importances(study, evaluator=evaluator)
    assert set(found) == {"max_lr", "pct_start", "accum_steps"}
    shown = ", ".join(f"{k} {v:.2f}" for k, v in found.items())
    assert (
        f"parameter importances (Optuna fANOVA over {len(complete)} complete trials): {shown}\n"
    ) in printed
    assert (out / "plots" / "param_importances.png").stat().st_size > 5000

    exported = RunConfig.from_yaml(out / "best_config.yaml")
    experiment = load_experiment(experiment_dir)
    best = rank_configurations(experiment.trials, experiment.params).iloc[0]
    expected = run_config_for(experiment, configuration_of(best, experiment.params))
    assert exported.to_dict() == expected.to_dict()
    from tune_eegpt.pipeline import build_trainer, prepare_data

    trainer = build_trainer(exported, prepare_data(exported, progress=False))
    metrics = trainer.train_epoch()
    assert metrics["epoch"] == 1.0
    y, p = trainer.predict(trainer.val_data)
    assert metrics["val_auroc"] == pytest.approx(roc_auc_score(y, p), abs=1e-12)


@pytest.mark.slow
def test_interrupted_experiment_loads(experiment, experiment_dir, tmp_path):
    finished = experiment.trials[experiment.trials["end_state"] == "finished"].iloc[0]
    copy = interrupt_copy(experiment_dir, tmp_path / "cut", finished["trial_dir"], keep_epochs=2)
    loaded = load_experiment(f"file://{copy}")  # through pyarrow's URI filesystems
    assert len(loaded.trials) == NUM_TRIALS
    assert sorted(loaded.params) == sorted(experiment.params)  # from params.json
    row = loaded.trials.set_index("trial_id").loc[finished["trial_id"]]
    assert row["end_state"] == "running"
    assert row["epochs_run"] == 2
    h = loaded.history[loaded.history["trial_id"] == finished["trial_id"]]
    assert list(h["epoch"]) == [1.0, 2.0]  # the replayed epoch once, the half line skipped
    before = experiment.trials.set_index("trial_id")["end_state"].to_dict()
    after = loaded.trials.set_index("trial_id")["end_state"].to_dict()
    before[finished["trial_id"]] = "running"
    assert after == before


@pytest.mark.slow
def test_confirm_reruns_the_top_configuration_over_seeds(experiment, tmp_path, capsys):
    ranked = rank_configurations(experiment.trials, experiment.params)
    threshold = float(ranked["best_val_auroc"].iloc[0]) - 1e-9  # the best one qualifies
    runs, summary, lines = run_confirmation(experiment, tmp_path, threshold, top_k=1, seeds=2)
    assert len(runs) == 2 and sorted(runs["seed"]) == [1, 2]
    assert (runs["epochs"] == EPOCHS).all()
    assert runs["trial_path"].map(lambda p: Path(p).is_dir()).all()
    assert len(summary) == 1
    r = summary.iloc[0]
    assert configuration_of(r, experiment.params) == configuration_of(
        ranked.iloc[0], experiment.params
    )
    assert r["val_auroc_mean"] == pytest.approx(runs["val_auroc"].mean())
    assert r["val_auroc_std"] == pytest.approx(runs["val_auroc"].std())
    assert bool(r["confirmed"]) == (r["val_auroc_mean"] >= threshold)
    assert (tmp_path / "confirmation.csv").is_file()
    assert any("over 2 seeds" in line for line in lines)
    bar = capsys.readouterr().err.split("\r")[-1]  # the progress bar's last state
    assert "confirm: 100%" in bar and f"{2 * EPOCHS}/{2 * EPOCHS}" in bar
    assert "runs ended 2/2" in bar


@pytest.mark.slow
def test_evaluate_scores_the_test_split_once_with_intervals(experiment, tmp_path, capsys):
    frame, lines = evaluate_winner(experiment, tmp_path, allow_unconfirmed=True, resamples=300)
    shown = capsys.readouterr().err
    assert "training the winner: 100%" in shown and f"{EPOCHS}/{EPOCHS}" in shown
    assert "bootstrap: 100%" in shown and "300/300" in shown
    assert set(frame["level"]) == {"window", "recording"}
    assert set(frame["metric"]) == {"auroc", "bal_acc", "pr_auc"}
    finite = frame.dropna(subset=["estimate", "ci_low", "ci_high"])
    assert len(finite) >= 3
    assert finite["resamples_used"].between(1, 300).all()
    with pytest.raises(FileExistsError, match="scored already"):
        evaluate_winner(experiment, tmp_path, allow_unconfirmed=True, resamples=10)
    assert (tmp_path / "test_evaluation.json").is_file()


def test_bootstrap_intervals_resample_recordings():
    """Every window of a recording is identical, so a resample that draws whole recordings
    gives the window-level metrics exactly the recording-level ones (AUROC, balanced
    accuracy and PR-AUC do not change when every point is repeated 5 times); drawing
    windows one by one would give other, narrower intervals."""
    rng = np.random.default_rng(0)
    rec_y = np.arange(40) % 2
    rec_p = np.clip(0.5 + 0.3 * (rec_y - 0.5) + rng.normal(0, 0.2, 40), 0, 1)
    recordings = np.repeat(np.arange(40), 5)
    y, prob = np.repeat(rec_y, 5), np.repeat(rec_p, 5)
    frame = bootstrap_intervals(y, prob, recordings, resamples=50, seed=1)
    again = bootstrap_intervals(y, prob, recordings, resamples=50, seed=1)
    pd.testing.assert_frame_equal(frame, again)  # seeded
    by_level = frame.set_index(["level", "metric"])
    for column in ("estimate", "ci_low", "ci_high", "resamples_used"):
        window = by_level.loc["window", column].to_numpy()
        recording = by_level.loc["recording", column].to_numpy()
        np.testing.assert_allclose(window, recording, rtol=0, atol=1e-12, err_msg=column)
    assert (frame["ci_high"] - frame["ci_low"] > 0.05).all()
    assert set(frame["n_recordings"]) == {40} and set(frame["n_windows"]) == {200}


@pytest.mark.slow
def test_notebook_runs_top_to_bottom(experiment_dir, tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    # As `jupyter notebook analysis/trials.ipynb` runs it: from its own folder, with its
    # default experiment (the newest under the checkout's runs/).
    monkeypatch.delenv("TUNE_EEGPT_EXPERIMENT", raising=False)
    monkeypatch.setenv("TUNE_EEGPT_ANALYSIS_OUT", str(tmp_path / "nb"))
    runs = REPO / "runs"
    made_runs = not runs.exists()
    runs.mkdir(exist_ok=True)
    link = runs / f"notebook-test-{os.getpid()}"
    link.symlink_to(experiment_dir, target_is_directory=True)
    os.utime(experiment_dir)  # the newest experiment there
    nb = nbformat.read(REPO / "analysis" / "trials.ipynb", as_version=4)
    try:
        folder = {"metadata": {"path": str(REPO / "analysis")}}
        nbclient.NotebookClient(nb, timeout=120, kernel_name="python3", resources=folder).execute()
    finally:
        link.unlink()
        if made_runs:
            runs.rmdir()
    printed = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    assert f"{NUM_TRIALS} trials, searched" in printed
    images = [
        o
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if "image/png" in o.get("data", {})
    ]
    assert len(images) >= 5  # three plots, the importances and the schedule, inline
    assert (tmp_path / "nb" / "best_config.yaml").is_file()


@pytest.mark.slow
def test_notebook_command_writes_the_executed_copy_beside_the_analysis(
    experiment_dir, tmp_path, capsys
):
    nbformat = pytest.importorskip("nbformat")
    from analysis.__main__ import main

    source = (REPO / "analysis" / "trials.ipynb").read_bytes()

    def files() -> list[str]:
        return sorted(p.name for p in (REPO / "analysis").iterdir() if p.name != "__pycache__")

    before = files()
    out = tmp_path / "nb"
    code = main(["notebook", str(experiment_dir), "--out", str(out), "--threshold", "0.5"])
    assert code == 0
    assert capsys.readouterr().out.endswith(f"executed notebook: {out / 'trials.ipynb'}\n")
    nb = nbformat.read(out / "trials.ipynb", as_version=4)
    printed = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    assert f"{NUM_TRIALS} trials, searched" in printed and "threshold 0.5\n" in printed
    assert "parameter importances (Optuna fANOVA over " in printed
    assert f"{python_command()} -m tune_eegpt.train --config {out / 'best_config.yaml'}" in printed
    assert (out / "best_config.yaml").is_file()
    # the source tree is as it was: the notebook without outputs, no executed copy beside it
    assert (REPO / "analysis" / "trials.ipynb").read_bytes() == source
    assert files() == before
