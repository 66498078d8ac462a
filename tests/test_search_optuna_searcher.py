"""PrunedAwareOptunaSearch against Ray's OptunaSearch directly: no Tuner, no Ray cluster."""

import optuna
import pytest
from optuna.trial import TrialState
from ray.tune.search.optuna import OptunaSearch

from tune_eegpt.optuna_searcher import PrunedAwareOptunaSearch, check_ray_internals

optuna.logging.set_verbosity(optuna.logging.WARNING)
SPACE = {"max_lr": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True)}


def searcher() -> PrunedAwareOptunaSearch:
    return PrunedAwareOptunaSearch(
        space=SPACE,
        metric="val_auroc",
        mode="max",
        sampler=optuna.samplers.RandomSampler(seed=0),
    )


def report(epoch: int, auroc: float, **flags) -> dict:
    return {"epoch": float(epoch), "val_auroc": auroc, "diverged": 0, "schedule_done": 0, **flags}


def frozen(s: PrunedAwareOptunaSearch, number: int):
    return s.study.get_trials(deepcopy=False)[number]


def test_stopped_trial_is_pruned_with_its_per_epoch_values():
    s = searcher()
    assert s.suggest("a") is not None
    s.on_trial_result("a", report(1, 0.61))
    # ASHA's stopping result reaches on_trial_complete only
    s.on_trial_complete("a", report(2, 0.64))
    t = frozen(s, 0)
    assert t.state == TrialState.PRUNED
    assert t.intermediate_values == {1: 0.61, 2: 0.64}
    assert t.value == 0.64  # Optuna gives a pruned trial its last intermediate value


def test_finished_trial_is_complete_with_its_last_value():
    s = searcher()
    s.suggest("a")
    s.on_trial_result("a", report(1, 0.7))
    s.on_trial_complete("a", report(2, 0.75, schedule_done=1))
    t = frozen(s, 0)
    assert (t.state, t.value) == (TrialState.COMPLETE, 0.75)
    assert t.intermediate_values == {1: 0.7, 2: 0.75}


def test_diverged_trial_is_complete_at_chance_level():
    s = searcher()
    s.suggest("a")
    s.on_trial_complete("a", report(1, 0.5, diverged=1))
    assert (frozen(s, 0).state, frozen(s, 0).value) == (TrialState.COMPLETE, 0.5)


def test_errored_trial_fails():
    s = searcher()
    s.suggest("a")
    s.on_trial_result("a", report(1, 0.66))
    s.on_trial_complete("a", None, error=True)
    t = frozen(s, 0)
    assert t.state == TrialState.FAIL and t.value is None
    assert t.intermediate_values == {1: 0.66}


def test_restarted_trial_does_not_record_a_step_twice():
    s = searcher()
    s.suggest("a")
    s.on_trial_result("a", report(1, 0.60))
    s.on_trial_result("a", report(2, 0.62))
    # the trial crashed after epoch 2 and restarted from its epoch-1 checkpoint
    s.on_trial_result("a", report(2, 0.63))
    s.on_trial_result("a", report(3, 0.65))
    s.on_trial_complete("a", report(3, 0.65, schedule_done=1))
    t = frozen(s, 0)
    assert t.intermediate_values == {1: 0.60, 2: 0.62, 3: 0.65}
    assert (t.state, t.value) == (TrialState.COMPLETE, 0.65)


def test_plain_optuna_search_would_call_a_stopped_trial_complete():
    """Why the subclass exists: Ray's own searcher records the stopped trial as COMPLETE."""
    plain = OptunaSearch(
        space=SPACE, metric="val_auroc", mode="max", sampler=optuna.samplers.RandomSampler(seed=0)
    )
    plain.suggest("a")
    plain.on_trial_complete("a", report(2, 0.64))
    assert plain._ot_study.get_trials()[0].state == TrialState.COMPLETE


def test_missing_ray_internals_are_named_with_the_ray_version():
    s = searcher()
    check_ray_internals(s)
    del s._completed_trials
    with pytest.raises(RuntimeError, match=r"ray 2\.\d+.*: OptunaSearch has no _completed_trials"):
        check_ray_internals(s)


def test_the_study_is_journalled_and_a_lost_trial_is_told_fail(tmp_path):
    """The searcher writes its study into the experiment's journal as it goes (read back by
    a fresh storage, as another process would); a trial asked for and never reported (the
    driver was killed before Tune kept it) is told FAIL once the search has ended."""
    from tune_eegpt.optuna_journal import close_lost_trials, journal_storage, load_journal_study

    s = PrunedAwareOptunaSearch(
        space=SPACE,
        metric="val_auroc",
        mode="max",
        sampler=optuna.samplers.RandomSampler(seed=0),
        storage=journal_storage(str(tmp_path / "exp")),
        study_name="exp",
    )
    s.suggest("a")
    s.on_trial_result("a", report(1, 0.7))
    s.on_trial_complete("a", report(2, 0.8, schedule_done=1))
    s.suggest("ghost")  # asked for; the driver dies before the trial runs
    study = load_journal_study(str(tmp_path / "exp"), "exp")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.RUNNING]
    assert study.trials[0].intermediate_values == {1: 0.7, 2: 0.8}
    assert close_lost_trials(study) == 1
    again = load_journal_study(str(tmp_path / "exp"), "exp")
    assert [t.state for t in again.trials] == [TrialState.COMPLETE, TrialState.FAIL]
    assert load_journal_study("s3://bucket/exp", "exp") is None  # object storage: in memory


def test_a_journal_record_cut_short_by_a_full_disk_is_dropped_on_resume(tmp_path):
    """Optuna appends records as lines; one cut short would swallow the next append and
    leave the study unreadable. repair_journal drops it; the study then goes on."""
    from tune_eegpt.optuna_journal import JOURNAL, journal_storage, repair_journal

    experiment = str(tmp_path / "exp")
    study = optuna.create_study(study_name="exp", storage=journal_storage(experiment))
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    path = tmp_path / "exp" / JOURNAL
    whole = path.read_bytes()
    assert repair_journal(experiment) == 0  # a whole journal is left as it is
    path.write_bytes(whole + b'{"op_code":4,"worker_id":"x","study_id":0,"da')  # cut short
    assert repair_journal(experiment) == len(b'{"op_code":4,"worker_id":"x","study_id":0,"da')
    assert path.read_bytes() == whole
    again = optuna.load_study(study_name="exp", storage=journal_storage(experiment))
    again.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    assert [t.state for t in again.trials] == [TrialState.COMPLETE] * 3


def test_a_trial_the_journal_finished_after_the_snapshot_is_recorded_again_whole(tmp_path):
    """Tune resumes from its last snapshot; the journal may already hold a later end of a
    trial (told FAIL as the disk filled up). Optuna cannot reopen it: the resumed trial's
    epochs and end go into a new trial with the same parameters, and nothing raises."""
    from tune_eegpt.optuna_journal import journal_storage, load_journal_study

    experiment = str(tmp_path / "exp")
    first = PrunedAwareOptunaSearch(
        space=SPACE,
        metric="val_auroc",
        mode="max",
        sampler=optuna.samplers.RandomSampler(seed=0),
        storage=journal_storage(experiment),
        study_name="exp",
    )
    first.suggest("a")
    first.on_trial_result("a", report(1, 0.7))
    first.save(str(tmp_path / "snapshot.pkl"))  # Tune's state of the searcher
    first.on_trial_complete("a", None, error=True)  # after the snapshot: FAIL in the journal
    resumed = PrunedAwareOptunaSearch(space=SPACE, metric="val_auroc", mode="max")
    resumed.restore(str(tmp_path / "snapshot.pkl"))  # the resumed driver
    resumed.on_trial_result("a", report(1, 0.7))  # replayed from its checkpoint
    resumed.on_trial_result("a", report(2, 0.8))
    resumed.on_trial_complete("a", report(2, 0.8, schedule_done=1))
    trials = load_journal_study(experiment).trials
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert trials[1].params == trials[0].params and trials[1].value == 0.8
    assert trials[1].intermediate_values == {1: 0.7, 2: 0.8}
