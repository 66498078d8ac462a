"""Tune's output in the project's terms: status blocks whose best trial is ranked as the
summary ranks it and whose folder is the experiment's, and TensorBoard HParams that hold the
fixed hyperparameters beside the searched ones."""

from __future__ import annotations

import io
from contextlib import redirect_stdout

from ray import tune
from ray.tune.logger import TBXLoggerCallback

RANKED_BY = "best_val_auroc"  # each trial's best epoch, as the closing summary ranks


class ExperimentReporter(tune.CLIReporter):
    """A CLIReporter whose "Current best trial" is the trial the summary names (Tune's own
    metric is the last epoch's val_auroc, which ASHA and the searcher need), and whose
    "Result logdir" is the experiment folder rather than Ray's ``driver_artifacts``."""

    def __init__(self, **kwargs) -> None:
        super().__init__(metric=RANKED_BY, mode="max", **kwargs)

    def set_search_properties(self, metric: str | None, mode: str | None) -> bool:
        return True  # keeps RANKED_BY; Tune's metric and mode stay Tune's

    def report(self, trials: list, done: bool, *sys_info: str) -> None:
        text = io.StringIO()
        with redirect_stdout(text):
            super().report(trials, done, *sys_info)
        print(with_experiment_folders(text.getvalue(), trials), end="", flush=True)


def with_experiment_folders(text: str, trials: list) -> str:
    """``text`` with each trial's staging folder replaced by its experiment folder."""
    for trial in trials:
        staged, stored = trial.local_experiment_path, trial.remote_experiment_path
        if staged and stored and staged != stored:
            text = text.replace(f"Result logdir: {staged}", f"Result logdir: {stored}")
    return text


# Besides the searched parameters, TensorBoard's HParams view shows these (where the
# space does not search them) with the values every trial ran with.
SHOWN_FIXED = (
    "max_lr",
    "pct_start",
    "accum_steps",
    "batch_size",
    "epochs",
    "weight_decay",
    "dropout",
    "div_factor",
    "final_div_factor",
    "anneal_strategy",
    "seed",
)


def fixed_hparams(cfg, searched) -> dict:
    """The run config's values of SHOWN_FIXED that ``searched`` does not search."""
    return {name: cfg.get(name) for name in SHOWN_FIXED if name not in searched}


class HParamsWithFixed(TBXLoggerCallback):
    """Tune's TensorBoard logger, whose HParams (written when a trial ends) hold the fixed
    hyperparameters beside the searched ones: Tune's own lists only what the searcher
    chose. It replaces Tune's default one (Tune adds none when a callback of its kind is
    given)."""

    def __init__(self, fixed: dict) -> None:
        super().__init__()
        self.fixed = dict(fixed)

    def log_trial_end(self, trial, failed: bool = False) -> None:
        searched = trial.evaluated_params
        trial.evaluated_params = {**self.fixed, **(searched or {})}
        try:
            super().log_trial_end(trial, failed)
        finally:
            trial.evaluated_params = searched
