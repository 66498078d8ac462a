"""A progress bar for the confirmation grid: trial-epochs done of all the grid's, and how
many runs have ended (the grid trains for hours on TUAB; Tune's own tables stay off)."""

from __future__ import annotations

from typing import Any

from ray import tune
from tqdm import tqdm


class GridProgress(tune.Callback):
    """Counts each run's epochs as Tune reports them; ``runs`` x ``epochs`` in all."""

    def __init__(self, runs: int, epochs: int) -> None:
        self.runs, self.epochs = runs, epochs
        self.bar: tqdm | None = None
        self.epochs_of: dict[str, int] = {}
        self.ended = 0

    def setup(self, **info: Any) -> None:
        self.bar = tqdm(total=self.runs * self.epochs, desc="confirm", unit="epoch")
        self._postfix()

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info):
        done = int(result.get("epoch", 0))
        self._advance(trial.trial_id, done)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info) -> None:
        self._advance(trial.trial_id, self.epochs)  # a diverged run stops early: all counted
        self.ended += 1
        self._postfix()

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info) -> None:
        self.on_trial_complete(iteration, trials, trial)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        if self.bar is not None:
            self.bar.close()

    def _advance(self, trial_id: str, done: int) -> None:
        before = self.epochs_of.get(trial_id, 0)
        if self.bar is not None and done > before:
            self.bar.update(done - before)
            self.epochs_of[trial_id] = done

    def _postfix(self) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(f"runs ended {self.ended}/{self.runs}")
