"""An experiment directory -> pandas: one row per trial, and every trial's per-epoch history.

Reads what ``python -m tune_eegpt.search`` leaves behind, whether the search finished,
was interrupted or is still running, on a local path or behind a URI that pyarrow's
filesystems understand (``s3://``, ``gs://``, ``file://``)::

    <experiment>/tune_eegpt_search.json      base run config, searched names, threshold
    <experiment>/experiment_state-*.json     Tune's view of every trial (status)
    <experiment>/<trial>/result.json         one JSON line per report (replayed after a restart)
    <experiment>/<trial>/params.json         the trial's hyperparameters
    <experiment>/<trial>/error.txt           present when the trial crashed
    <experiment>/<trial>/checkpoint_00000N/step-000000123.pt   trainer state at global_step 123

No ray import: the files are read as they are.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from io import StringIO
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.fs as pafs

from tune_eegpt.end_state import end_state

SEARCH_INFO = "tune_eegpt_search.json"  # written by tune_eegpt.search
METRIC = "val_auroc"
DEFAULT_THRESHOLD = 0.869
TRIALS_PARQUET, HISTORY_PARQUET = "trials.parquet", "history.parquet"

_CHECKPOINT_FILE = re.compile(r"^step-(\d+)\.pt$")
# The per-epoch columns kept in the history frame, when the results have them.
HISTORY_COLUMNS = (
    "epoch",
    "training_iteration",
    "global_step",
    "samples_seen",
    "lr",
    "train_loss",
    "val_auroc",
    "val_bal_acc",
    "val_pr_auc",
    "val_rec_auroc",
    "val_rec_bal_acc",
    "val_rec_pr_auc",
    "best_val_auroc",
    "diverged",
    "schedule_done",
    "time_total_s",
    "timestamp",
)


@dataclass
class Experiment:
    """What an experiment directory holds, as frames. ``trials``: one row per trial;
    ``history``: one row per (trial, epoch); ``info``: tune_eegpt_search.json ({} if absent)."""

    path: str
    trials: pd.DataFrame
    history: pd.DataFrame
    info: dict[str, Any] = field(default_factory=dict)
    params: list[str] = field(default_factory=list)  # the searched hyperparameters

    @property
    def threshold(self) -> float:
        return float(self.info.get("threshold", DEFAULT_THRESHOLD))

    @property
    def epochs(self) -> int | None:
        epochs = self.info.get("epochs")
        return int(epochs) if epochs is not None else None


class Storage:
    """A folder on a local disk or behind a URI, read through pyarrow's filesystems."""

    def __init__(self, location: str | Path) -> None:
        location = str(location)
        if "://" in location:
            self.fs, self.root = pafs.FileSystem.from_uri(location)
        else:
            self.fs, self.root = pafs.LocalFileSystem(), str(Path(location).expanduser().resolve())
        self.location = location
        self.root = self.root.rstrip("/")

    def uri(self, relative: str) -> str:
        """How a user addresses ``relative``: a local path, or a URI under the given one."""
        if "://" in self.location:
            return f"{self.location.rstrip('/')}/{relative}"
        return f"{self.root}/{relative}"

    def listdir(self, relative: str = "") -> list[pafs.FileInfo]:
        path = f"{self.root}/{relative}".rstrip("/")
        return self.fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))

    def exists(self, relative: str) -> bool:
        return self.fs.get_file_info(f"{self.root}/{relative}").type != pafs.FileType.NotFound

    def read_text(self, relative: str) -> str:
        with self.fs.open_input_stream(f"{self.root}/{relative}") as fh:
            return fh.read().decode("utf-8", errors="replace")


def load_experiment(location: str | Path) -> Experiment:
    """Reads an experiment directory (local path or URI) into an :class:`Experiment`."""
    store = Storage(location)
    if store.fs.get_file_info(store.root).type != pafs.FileType.Directory:
        raise FileNotFoundError(
            f"experiment directory not found: {location}; give the folder the search wrote "
            "(<storage>/<name>, the 'results:' line at the end of the search)"
        )
    info = json.loads(store.read_text(SEARCH_INFO)) if store.exists(SEARCH_INFO) else {}
    statuses = _trial_statuses(store)
    trial_dirs = sorted(
        f.base_name
        for f in store.listdir()
        if f.type == pafs.FileType.Directory
        and any(store.exists(f"{f.base_name}/{n}") for n in ("result.json", "params.json"))
    )
    if not trial_dirs:
        raise FileNotFoundError(
            f"{location} holds no trial folders (no */result.json or */params.json): "
            "is it an experiment directory of tune_eegpt.search?"
        )
    rows, histories, params = [], [], list(info.get("searched", []))
    for name in trial_dirs:
        history, config = _read_trial(store, name)
        if not info.get("searched"):
            params += [k for k in config if k not in params]
        histories.append(history)
        rows.append(_trial_row(store, name, history, config, statuses))
    trials = pd.DataFrame(rows)
    for p in params:  # every searched name is a column, even if some trial lacks it
        if p not in trials:
            trials[p] = None
    lead = ["trial_id", *params]
    trials = trials[lead + [c for c in trials.columns if c not in lead]]
    history = (
        pd.concat([h for h in histories if len(h)], ignore_index=True)
        if any(len(h) for h in histories)
        else pd.DataFrame(columns=["trial_id", *HISTORY_COLUMNS])
    )
    return Experiment(str(location), trials, history, info, params)


def save_frames(experiment: Experiment, out_dir: str | Path) -> tuple[Path, Path]:
    """Writes ``trials.parquet`` and ``history.parquet`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    trials, history = out / TRIALS_PARQUET, out / HISTORY_PARQUET
    _counts_as_integers(experiment.trials).to_parquet(trials, index=False)
    _counts_as_integers(experiment.history).to_parquet(history, index=False)
    return trials, history


# Counts that Tune's results carry as floats; nullable integers in the parquet files.
COUNT_COLUMNS = (
    "best_epoch",
    "epochs_run",
    "epoch",
    "global_step",
    "samples_seen",
    "training_iteration",
)


def _counts_as_integers(frame: pd.DataFrame) -> pd.DataFrame:
    """Count columns whose values are all whole numbers (or missing) become Int64."""
    frame = frame.copy()
    for name in COUNT_COLUMNS:
        if name not in frame or not pd.api.types.is_numeric_dtype(frame[name]):
            continue
        values = frame[name].dropna().astype(float)
        if (values == values.round()).all():
            frame[name] = frame[name].astype("Float64").round().astype("Int64")
    return frame


def load_steps(experiment: Experiment, trial_ids: list[str]) -> pd.DataFrame:
    """The trainer's per-optimizer-step log (``trainer/steps.csv``) of some trials:
    trial_id, global_step, epoch, lr, loss, grad_norm; a step replayed after a restart
    appears once (the last record)."""
    store = Storage(experiment.path)
    frames = []
    dirs = experiment.trials.set_index("trial_id")["trial_dir"]
    for trial_id in trial_ids:
        rel = f"{dirs[trial_id]}/trainer/steps.csv"
        if not store.exists(rel):
            continue
        text = store.read_text(rel)
        try:
            steps = pd.read_csv(StringIO(text), on_bad_lines="skip")
        except pd.errors.EmptyDataError:
            continue
        steps = steps.apply(pd.to_numeric, errors="coerce").dropna(subset=["global_step"])
        steps = steps.drop_duplicates("global_step", keep="last").sort_values("global_step")
        frames.append(steps.assign(trial_id=trial_id))
    if not frames:
        return pd.DataFrame(columns=["trial_id", "global_step", "epoch", "lr", "loss", "grad_norm"])
    return pd.concat(frames, ignore_index=True)


# ---- one trial ---------------------------------------------------------------------------
def _read_trial(store: Storage, name: str) -> tuple[pd.DataFrame, dict[str, Any]]:
    """(history deduplicated on epoch, config) of one trial folder."""
    records: list[dict[str, Any]] = []
    if store.exists(f"{name}/result.json"):
        for line in store.read_text(f"{name}/result.json").splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # an empty line, or the last one being written right now
    config: dict[str, Any] = {}
    if store.exists(f"{name}/params.json"):
        try:
            config = json.loads(store.read_text(f"{name}/params.json"))
        except json.JSONDecodeError:
            config = {}
    if not config and records:
        config = dict(records[-1].get("config", {}))
    trial_id = _trial_id(name, records)
    history = pd.DataFrame([{k: r.get(k) for k in HISTORY_COLUMNS} for r in records])
    if len(history):
        history = history.dropna(subset=["epoch"])
        # a trial restarted from a checkpoint replays epochs: each epoch once, the last row
        history = history.drop_duplicates("epoch", keep="last").sort_values("epoch")
        history.insert(0, "trial_id", trial_id)
        history = history.reset_index(drop=True)
    else:
        history = pd.DataFrame(columns=["trial_id", *HISTORY_COLUMNS])
    return history, config


def _trial_id(name: str, records: list[dict[str, Any]]) -> str:
    for r in records:
        if r.get("trial_id"):
            return str(r["trial_id"])
    match = re.match(r"^[A-Za-z0-9]+_([0-9a-f]{5,})_", name)
    return match.group(1) if match else name


def _trial_row(
    store: Storage,
    name: str,
    history: pd.DataFrame,
    config: dict[str, Any],
    statuses: dict[str, str],
) -> dict[str, Any]:
    trial_id = _trial_id(name, [{"trial_id": history["trial_id"].iloc[0]}] if len(history) else [])
    errored = store.exists(f"{name}/error.txt")
    status = statuses.get(name) or statuses.get(trial_id)
    row: dict[str, Any] = {"trial_id": trial_id, **config}
    nan = float("nan")
    scored = history.dropna(subset=[METRIC]) if len(history) else history
    if len(scored):
        best = scored.loc[scored[METRIC].astype(float).idxmax()]
        last = history.iloc[-1]
        row.update(
            best_val_auroc=float(best[METRIC]),
            last_val_auroc=float(scored[METRIC].iloc[-1]),
            best_epoch=float(best["epoch"]),
            val_bal_acc_at_best=_float(best.get("val_bal_acc")),
            val_pr_auc_at_best=_float(best.get("val_pr_auc")),
        )
    else:
        last = None
        row.update(
            best_val_auroc=nan,
            last_val_auroc=nan,
            best_epoch=nan,
            val_bal_acc_at_best=nan,
            val_pr_auc_at_best=nan,
        )
    row["epochs_run"] = float(history["epoch"].max()) if len(history) else 0.0
    row["global_step"] = _float(last.get("global_step")) if last is not None else nan
    row["end_state"] = end_state(last, status, errored)
    row["tune_status"] = status or "UNKNOWN"
    row["wall_time_s"] = _float(last.get("time_total_s")) if last is not None else nan
    checkpoint, checkpoint_file = _best_checkpoint(store, name, scored)
    row["best_checkpoint"] = checkpoint
    row["best_checkpoint_file"] = checkpoint_file
    row["trial_dir"] = name
    row["trial_path"] = store.uri(name)
    return row


def _best_checkpoint(
    store: Storage, name: str, scored: pd.DataFrame
) -> tuple[str | None, str | None]:
    """The kept checkpoint_* folder whose trainer state is the best-scored epoch's (Tune
    keeps the best by val_auroc and the latest); matched on global_step, which names the
    trainer's checkpoint file."""
    kept: dict[float, tuple[str, str]] = {}
    for folder in store.listdir(name):
        if folder.type != pafs.FileType.Directory or not folder.base_name.startswith("checkpoint_"):
            continue
        for f in store.listdir(f"{name}/{folder.base_name}"):
            match = _CHECKPOINT_FILE.match(f.base_name)
            if match:
                rel = f"{name}/{folder.base_name}"
                kept[float(match.group(1))] = (store.uri(rel), store.uri(f"{rel}/{f.base_name}"))
    if not kept or not len(scored):
        return None, None
    by_score = scored.dropna(subset=["global_step"]).sort_values(METRIC, ascending=False)
    for step in by_score["global_step"].astype(float):
        if step in kept:
            return kept[step]
    return None, None


def _trial_statuses(store: Storage) -> dict[str, str]:
    """{trial folder name and trial id: Tune status} from the newest experiment state."""
    states = sorted(
        f.base_name
        for f in store.listdir()
        if f.base_name.startswith("experiment_state") and f.base_name.endswith(".json")
    )
    if not states:
        return {}
    try:
        state = json.loads(store.read_text(states[-1]))
    except json.JSONDecodeError:  # being rewritten right now: go without it
        return {}
    statuses: dict[str, str] = {}
    for entry in state.get("trial_data", []):
        try:
            trial = json.loads(entry[0]) if isinstance(entry[0], str) else entry[0]
        except (json.JSONDecodeError, IndexError, TypeError):
            continue
        status = str(trial.get("status", ""))
        if trial.get("relative_logdir"):
            statuses[trial["relative_logdir"]] = status
        if trial.get("trial_id"):
            statuses[str(trial["trial_id"])] = status
    return statuses


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")
