"""Tune's status blocks in the project's terms: the best trial ranked as the summary ranks
it, and the experiment folder where Tune names its driver's staging folder."""

from __future__ import annotations

import io
from contextlib import redirect_stdout

from ray import tune

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
