"""Ray's OptunaSearch, told the truth about trials that ASHA stopped.

Out of the box Ray tells Optuna that a trial ASHA stopped is COMPLETE with its last,
half-trained value, so TPE mixes low-fidelity scores with finished ones. Here a trial is
told to Optuna by its end state (:mod:`tune_eegpt.end_state`): finished or diverged ->
COMPLETE (a diverged probe is complete at chance level), stopped by the scheduler ->
PRUNED, with its per-epoch values as intermediate values, crashed -> FAIL. Intermediate
values are keyed by epoch, so a trial replayed after a restart reports each epoch once.

It leans on private attributes of Ray's OptunaSearch (``_ot_study``, ``_ot_trials``,
``_completed_trials``); :func:`check_ray_internals` names the Ray version when they change.
"""

from __future__ import annotations

import logging
from typing import Any

import optuna
import ray
from optuna.trial import TrialState
from ray.tune.search.optuna import OptunaSearch

from tune_eegpt.end_state import end_state

logger = logging.getLogger(__name__)

OPTUNA_STATE = {
    "finished": TrialState.COMPLETE,
    "diverged": TrialState.COMPLETE,
    "stopped": TrialState.PRUNED,
    "crashed": TrialState.FAIL,
    "running": TrialState.FAIL,  # ended without a report: nothing to learn from
}
RAY_INTERNALS = ("_ot_study", "_ot_trials", "_completed_trials")
TESTED_RAY = "2.60"


def check_ray_internals(searcher: OptunaSearch) -> None:
    """Raises if Ray's OptunaSearch no longer has the attributes this class relies on."""
    missing = [name for name in RAY_INTERNALS if not hasattr(searcher, name)]
    if missing:
        raise RuntimeError(
            f"ray {ray.__version__}: OptunaSearch has no {', '.join(missing)}; "
            f"PrunedAwareOptunaSearch was written against ray {TESTED_RAY}. Install that "
            f"version (pip install 'ray[tune]=={TESTED_RAY}.*') or update "
            "tune_eegpt/optuna_searcher.py"
        )


class PrunedAwareOptunaSearch(OptunaSearch):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        check_ray_internals(self)

    @property
    def study(self):
        """The Optuna study the trials are told to."""
        return self._ot_study

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in self._completed_trials or self.metric not in result:
            return
        ot_trial = self._ot_trials[trial_id]
        epoch = int(round(result["epoch"]))
        frozen = self._frozen(trial_id)
        if frozen.state.is_finished():
            # told already by an earlier driver, after the state Tune resumed from was
            # saved (a journal runs ahead of Tune's snapshot): Optuna trials stay finished,
            # so the rest of this one is kept aside and recorded as a new trial at its end
            reopened = self.__dict__.setdefault("_reopened", {})
            reopened.setdefault(trial_id, dict(frozen.intermediate_values))
            reopened[trial_id].setdefault(epoch, result[self.metric])
        elif epoch not in frozen.intermediate_values:  # an epoch replayed after a restart
            ot_trial.report(result[self.metric], epoch)

    def _frozen(self, trial_id: str):
        return self._ot_study.get_trials(deepcopy=False)[self._ot_trials[trial_id].number]

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        if trial_id in self._completed_trials:
            return
        if result and not error:
            # Tune hands the result that made ASHA stop a trial to on_trial_complete
            # only, never to on_trial_result: record it as the last intermediate value.
            self.on_trial_result(trial_id, result)
        ended = end_state(result or None, "ERROR" if error else "TERMINATED", error)
        state = OPTUNA_STATE[ended]
        value = result.get(self.metric) if state == TrialState.COMPLETE and result else None
        if state == TrialState.COMPLETE and value is None:
            state = TrialState.FAIL
        try:
            frozen = self._frozen(trial_id)
            if frozen.state.is_finished():  # see on_trial_result: a new trial, whole
                values = self.__dict__.get("_reopened", {}).pop(trial_id, {})
                self._ot_study.add_trial(
                    optuna.trial.create_trial(
                        params=frozen.params,
                        distributions=frozen.distributions,
                        value=value,
                        state=state,
                        intermediate_values=values or dict(frozen.intermediate_values),
                    )
                )
            else:
                self._ot_study.tell(self._ot_trials[trial_id], value, state=state)
        except Exception as exc:  # e.g. a NaN value: keep the search going, say so
            logger.warning("Optuna refused the result of %s: %s", trial_id, exc)
        self._completed_trials.add(trial_id)
