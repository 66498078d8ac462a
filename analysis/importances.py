"""Which searched hyperparameters mattered: Optuna's own parameter importances (fANOVA,
seeded) over the complete trials of the search's study, read from its journal."""

from __future__ import annotations

import warnings
from pathlib import Path

import optuna

from analysis.load import Experiment
from tune_eegpt.optuna_journal import load_journal_study

MIN_COMPLETE = 3  # fewer complete trials than this give no importance worth a number


def search_study(experiment: Experiment) -> optuna.Study | None:
    """The search's study from ``optuna.journal`` (None: object storage, or a search from
    before the journal)."""
    if "://" in str(experiment.path):
        return None
    return load_journal_study(str(experiment.path))


def parameter_importances(study: optuna.Study) -> dict[str, float] | None:
    """{parameter: importance} summing to 1, most important first; None with fewer than
    MIN_COMPLETE complete trials."""
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(complete) < MIN_COMPLETE:
        return None
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
    return dict(optuna.importance.get_param_importances(study, evaluator=evaluator))


def importance_line(study: optuna.Study | None) -> str:
    if study is None:
        return "parameter importances: no optuna.journal in the experiment"
    found = parameter_importances(study)
    complete = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))
    if found is None:
        return (
            f"parameter importances: {complete} complete trial(s), "
            f"fewer than the {MIN_COMPLETE} needed"
        )
    shown = ", ".join(f"{name} {value:.2f}" for name, value in found.items())
    return f"parameter importances (Optuna fANOVA over {complete} complete trials): {shown}"


def plot_importances(study: optuna.Study, path: Path) -> Path | None:
    """Optuna's own importance plot (matplotlib), or None when there are too few trials."""
    if parameter_importances(study) is None:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # Optuna's plot switches matplotlib to its own style: kept to this figure
    with warnings.catch_warnings(), matplotlib.rc_context():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
        axes = optuna.visualization.matplotlib.plot_param_importances(study, evaluator=evaluator)
        path.parent.mkdir(parents=True, exist_ok=True)
        figure = axes.get_figure()
        figure.tight_layout()
        figure.savefig(path, dpi=120)
        plt.close(figure)
    return path
