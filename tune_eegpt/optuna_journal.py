"""The Optuna study of a search, on disk: Optuna's JournalStorage with its file backend in
the experiment folder, written by the searcher as the search runs and readable at any time
by ``optuna.load_study``, optuna-dashboard and analysis (safe for concurrent readers)."""

from __future__ import annotations

import os
from pathlib import Path

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

JOURNAL = "optuna.journal"  # the study of a search, as Optuna's JournalStorage writes it


def journal_storage(experiment: str) -> JournalStorage | None:
    """The study's storage for a search in a local (or mounted) ``experiment`` folder:
    Optuna's journal file there, readable by optuna-dashboard and ``optuna.load_study``
    while the search runs. None for object storage (s3://...): the study then lives in
    the driver's memory, as Ray's default."""
    if "://" in experiment:
        return None
    path = Path(experiment) / JOURNAL
    path.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(path)))


def load_journal_study(experiment: str, name: str | None = None) -> optuna.Study | None:
    """The study ``name`` (None: the journal's only one, whatever the folder is called now)
    from ``experiment``'s journal; None where there is no journal."""
    if "://" in experiment or not (Path(experiment) / JOURNAL).is_file():
        return None
    return optuna.load_study(study_name=name, storage=journal_storage(experiment))


def close_lost_trials(study: optuna.Study) -> int:
    """Trials still RUNNING once the search has ended were asked for by a driver that was
    killed before Tune recorded them (Tune runs their configurations again as new trials):
    they are told FAIL, so that the study's COMPLETE and PRUNED trials are Tune's, each
    once. Returns how many there were."""
    lost = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.RUNNING]
    for trial in lost:
        study.tell(trial.number, state=TrialState.FAIL)
    return len(lost)


def repair_journal(experiment: str) -> int:
    """Drops a last record cut short (a write that met a full disk): Optuna reads only
    whole lines, so no reader has seen it, but the next record would be appended onto it
    and make both unreadable. Returns the bytes dropped (0: the journal is whole)."""
    path = Path(experiment) / JOURNAL
    if "://" in experiment or not path.is_file():
        return 0
    data = path.read_bytes()
    if not data or data.endswith(b"\n"):
        return 0
    keep = data.rfind(b"\n") + 1
    with path.open("r+b") as f:
        f.truncate(keep)
        f.flush()
        os.fsync(f.fileno())
    return len(data) - keep
