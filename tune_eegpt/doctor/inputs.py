"""What the doctor reads: LR series from logs, step counters from checkpoints.

Each input is recognised by its content and extension: TensorBoard event files (or folders
holding them, read with TensorBoard's own ``EventAccumulator``, which honours the purge
marker a resumed run writes), CSV logs (pandas), plain text logs (one LR per line) and
checkpoints (``torch.load``). Anything that cannot be read is an ``InputError`` naming the
file and what was expected, raised before any analysis.
"""

from __future__ import annotations

import json
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

STEP_KEYS = ("global_step", "step", "trainer/global_step", "train/global_step", "_step", "iter")
EPOCH_KEYS = ("epoch", "train/epoch")
_LR_NAME = re.compile(r"(^|[/_.-])(lr|learning[_-]?rate)([/_.-]|$)|^lr-", re.I)
_TEXT_LR = re.compile(
    r"\b(?:lr|learning[ _]rate)\b\s*[:=]?\s*([0-9]*\.?[0-9]+(?:e[-+]?\d+)?)", re.I
)
_TEXT_STEP = re.compile(r"\b(?:global_step|step|iter(?:ation)?)\b\s*[:=]?\s*(\d+)", re.I)
_TEXT_EPOCH = re.compile(r"\bepoch\b\s*[:=]?\s*(\d+)", re.I)
_STEPPED_PAST = re.compile(
    r"Tried to step (\d+) times?\. The specified number of total steps is (\d+)"
)
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".tar")
HF_STATE = "trainer_state.json"  # marks a Hugging Face Trainer checkpoint-N folder


class InputError(ValueError):
    """An input the doctor cannot read; the message names the file and the fix."""


@dataclass
class LrSeries:
    """The LR a log recorded, in the order it was written."""

    source: str
    lr_key: str
    steps: np.ndarray  # int64, as logged (row order where the log has no step)
    lrs: np.ndarray  # float64
    epochs: np.ndarray | None = None
    step_key: str | None = None
    unmapped: list[str] = field(default_factory=list)
    stepped_past: tuple[int, int] | None = None  # PyTorch's "Tried to step X times" (X, total)


@dataclass
class CheckpointFacts:
    """The step counters and scheduler state a checkpoint holds."""

    source: str
    global_step: int | None
    epoch: int | None
    optimizer_steps: int | None
    scheduler: dict[str, Any] | None
    run_total_steps: int | None = None  # the run's own length, where it records one (ours)
    batches_per_epoch: int | None = None  # Lightning's loop state records these two
    batches_seen: int | None = None


def read_inputs(
    paths: list[str], lr_key: str | None = None, step_key: str | None = None, trusted: bool = False
) -> tuple[list[LrSeries], list[CheckpointFacts]]:
    series: list[LrSeries] = []
    checkpoints: list[CheckpointFacts] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if not path.exists():
            raise InputError(f"{raw}: no such file or folder")
        for kind, item in expand(path):
            _read_one(kind, item, lr_key, step_key, trusted, series, checkpoints)
    return series, checkpoints


def expand(path: Path) -> list[tuple[str | None, Path]]:
    """A file as itself; a Hugging Face checkpoint folder as one checkpoint; a run folder
    as its TensorBoard events, its CSV and text logs and its newest checkpoint."""
    if path.is_file():
        return [(input_kind(path), path)]
    if (path / HF_STATE).is_file():
        return [("hf_checkpoint", path)]
    found: list[tuple[str | None, Path]] = []
    if next(path.rglob("*tfevents*"), None) is not None:
        found.append(("tensorboard", path))
    for item in sorted(path.iterdir()):
        if item.is_file() and item.suffix.lower() in (".csv", ".log", ".txt"):
            found.append((input_kind(item), item))
    hf = sorted(p.parent for p in path.rglob(HF_STATE))
    saved = [
        p for p in path.rglob("*") if p.suffix.lower() in CHECKPOINT_SUFFIXES and p.parent not in hf
    ]
    if hf:  # Hugging Face Trainer's checkpoint-N folders: the furthest along
        found.append(("hf_checkpoint", max(hf, key=_hf_global_step)))
    elif saved:
        found.append(("checkpoint", max(saved, key=lambda p: (p.stat().st_mtime_ns, p.name))))
    if not found:
        raise InputError(
            f"{path}: no TensorBoard event files, CSV or text logs or checkpoints in this folder"
        )
    return found


def _read_one(
    kind: str | None,
    path: Path,
    lr_key: str | None,
    step_key: str | None,
    trusted: bool,
    series: list[LrSeries],
    checkpoints: list[CheckpointFacts],
) -> None:
    if kind == "tensorboard":
        series += read_tensorboard(path, lr_key)
    elif kind == "csv":
        series.append(read_csv(path, lr_key, step_key))
    elif kind == "checkpoint":
        checkpoints.append(read_checkpoint(path, trusted))
    elif kind == "hf_checkpoint":
        checkpoints.append(read_hf_checkpoint(path, trusted))
    elif kind == "text":
        series.append(read_text(path))
    else:
        raise InputError(
            f"{path}: not a log or checkpoint the doctor reads (TensorBoard event files or "
            "a folder of them, .csv, a text log, or a torch.save/.ckpt checkpoint)"
        )


def input_kind(path: Path) -> str | None:
    if "tfevents" in path.name:
        return "tensorboard"
    if path.suffix.lower() == ".csv":
        return "csv"
    if path.suffix.lower() in CHECKPOINT_SUFFIXES or zipfile.is_zipfile(path):
        return "checkpoint"
    with path.open("rb") as fh:
        head = fh.read(4096)
    if b"\0" not in head:
        return "text"
    return None


def read_tensorboard(path: Path, lr_key: str | None) -> list[LrSeries]:
    """One series per run folder (a folder holding event files) with an LR tag."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    folders = (
        [path.parent] if path.is_file() else sorted({p.parent for p in path.rglob("*tfevents*")})
    )
    out, seen_tags = [], []
    for folder in folders:
        accumulator = EventAccumulator(str(folder), size_guidance={"scalars": 0})
        try:
            accumulator.Reload()
        except Exception as exc:  # the reader's own errors: a damaged record, a bad file
            raise InputError(
                f"{folder}: TensorBoard could not read its event files ({exc})"
            ) from exc
        tags = accumulator.Tags().get("scalars", [])
        seen_tags += [f"{folder.name}/{t}" for t in tags]
        chosen = [lr_key] if lr_key in tags else [t for t in tags if _LR_NAME.search(t)][:1]
        if not chosen:
            continue
        events = accumulator.Scalars(chosen[0])
        steps = np.array([e.step for e in events], dtype=np.int64)
        lrs = np.array([e.value for e in events], dtype=np.float64)
        epochs = None
        epoch_tag = next((t for t in tags if t in EPOCH_KEYS), None)
        if epoch_tag is not None:
            by_step = {e.step: e.value for e in accumulator.Scalars(epoch_tag)}
            if all(s in by_step for s in steps):
                epochs = np.array([by_step[s] for s in steps], dtype=np.float64)
        unmapped = [t for t in tags if t != chosen[0]]
        out.append(LrSeries(str(folder), chosen[0], steps, lrs, epochs, "step", unmapped))
    if not out:
        raise InputError(
            f"{path}: no learning-rate tag among the TensorBoard scalars "
            f"({', '.join(seen_tags) or 'none'}); name it with --lr-key"
        )
    return out


def read_csv(path: Path, lr_key: str | None, step_key: str | None) -> LrSeries:
    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not a readable CSV log ({exc})") from exc
    columns = list(frame.columns)
    lr = (
        _pick(columns, lr_key, "--lr-key", path)
        if lr_key
        else next((c for c in columns if _LR_NAME.search(str(c))), None)
    )
    if lr is None:
        raise InputError(f"{path}: no learning-rate column among {columns}; name it with --lr-key")
    step = _pick(columns, step_key, "--step-key", path) if step_key else _column(columns, STEP_KEYS)
    epoch = _column(columns, EPOCH_KEYS)
    rows = frame[pd.to_numeric(frame[lr], errors="coerce").notna()]
    if rows.empty:
        raise InputError(f"{path}: the column {lr!r} holds no learning-rate values")
    steps = rows[step].to_numpy() if step else np.arange(len(rows))
    epochs = None
    if epoch is not None and rows[epoch].notna().all():
        epochs = rows[epoch].to_numpy(dtype=np.float64)
    unmapped = [c for c in columns if c not in (lr, step, epoch)]
    return LrSeries(
        str(path),
        str(lr),
        np.asarray(steps, dtype=np.int64),
        rows[lr].to_numpy(dtype=np.float64),
        epochs,
        step,
        unmapped,
    )


def _column(columns: list, keys: tuple[str, ...]) -> str | None:
    """The first of ``keys`` among the columns, in any case, also as W&B's export names
    a run's series (``Step``, ``<run> - train/global_step``)."""
    for key in keys:
        for c in columns:
            name = str(c).lower()
            if name == key or name.endswith(f" - {key}"):
                return c
    return None


def _pick(columns: list[str], key: str, flag: str, path: Path) -> str:
    if key not in columns:
        raise InputError(f"{path}: {flag} {key!r} is not a column; the columns are {columns}")
    return key


def read_text(path: Path) -> LrSeries:
    steps, lrs, epochs, stepped_past = [], [], [], None
    with path.open(errors="replace") as fh:
        for line in fh:
            past = _STEPPED_PAST.search(line)
            if past:
                stepped_past = (int(past.group(1)), int(past.group(2)))
            lr = _TEXT_LR.search(line)
            if lr is None:
                continue
            step, epoch = _TEXT_STEP.search(line), _TEXT_EPOCH.search(line)
            steps.append(int(step.group(1)) if step else -1)
            epochs.append(float(epoch.group(1)) if epoch else np.nan)
            lrs.append(float(lr.group(1)))
    if not lrs:
        if stepped_past:  # the crash is the finding; there is no series
            return LrSeries(
                str(path), "lr", np.zeros(0, np.int64), np.zeros(0), stepped_past=stepped_past
            )
        raise InputError(
            f"{path}: no line carries a learning rate (like 'lr=3e-4' or 'LR: 2.8e-03')"
        )
    has_steps = all(s >= 0 for s in steps)
    epoch_array = np.array(epochs)
    return LrSeries(
        str(path),
        "lr",
        np.array(steps if has_steps else range(len(lrs)), dtype=np.int64),
        np.array(lrs),
        None if np.isnan(epoch_array).any() else epoch_array,
        "step" if has_steps else None,
        stepped_past=stepped_past,
    )


def _torch_load(path: Path, trusted: bool) -> Any:
    import pickle

    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=not trusted)
    except pickle.UnpicklingError as exc:
        raise InputError(
            f"{path}: holds pickled objects that a plain load refuses; pass "
            "--trusted-checkpoint to unpickle it (only for a file from a source you trust)"
        ) from exc
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile) as exc:
        raise InputError(f"{path}: not a readable torch checkpoint ({exc})") from exc


def _hf_global_step(folder: Path) -> int:
    try:
        return int(json.loads((folder / HF_STATE).read_text()).get("global_step", -1))
    except (OSError, ValueError, TypeError, AttributeError):
        return -1


def read_hf_checkpoint(folder: Path, trusted: bool) -> CheckpointFacts:
    """A Hugging Face Trainer checkpoint-N folder: trainer_state.json (global_step, epoch,
    max_steps: the run's length), optimizer.pt (step counters) and scheduler.pt."""
    try:
        state = json.loads((folder / HF_STATE).read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{folder / HF_STATE}: not readable JSON ({exc})") from exc
    if not isinstance(state, dict):
        raise InputError(f"{folder / HF_STATE}: holds no trainer state object")
    optimizer = (
        _torch_load(folder / "optimizer.pt", trusted)
        if (folder / "optimizer.pt").is_file()
        else None
    )
    scheduler = (
        _torch_load(folder / "scheduler.pt", trusted)
        if (folder / "scheduler.pt").is_file()
        else None
    )
    return CheckpointFacts(
        str(folder),
        _int_or_none(state.get("global_step")),
        _int_or_none(state.get("epoch")),
        _optimizer_steps(optimizer),
        scheduler if isinstance(scheduler, dict) else None,
        _int_or_none(state.get("max_steps")),
    )


def read_checkpoint(path: Path, trusted: bool) -> CheckpointFacts:
    state = _torch_load(path, trusted)
    if not isinstance(state, dict):
        raise InputError(
            f"{path}: a checkpoint must be a dict; this one is a {type(state).__name__}"
        )
    optimizer = state.get("optimizer") or state.get("optimizer_state_dict")
    if optimizer is None and state.get("optimizer_states"):  # Lightning
        optimizer = state["optimizer_states"][0]
    scheduler = (
        state.get("scheduler") or state.get("lr_scheduler") or state.get("scheduler_state_dict")
    )
    if scheduler is None and state.get("lr_schedulers"):  # Lightning
        scheduler = state["lr_schedulers"][0]
    return CheckpointFacts(
        str(path),
        _int_or_none(state.get("global_step", state.get("step"))),
        _int_or_none(state.get("epoch")),
        _optimizer_steps(optimizer),
        scheduler if isinstance(scheduler, dict) else None,
        _int_or_none(state.get("total_steps")),
        *_lightning_batches(state),
    )


def _lightning_batches(state: dict) -> tuple[int | None, int | None]:
    """(batches per epoch, batches run) from a Lightning checkpoint's fit-loop progress;
    with the optimizer's step count they give the run's gradient accumulation."""
    try:
        loop = state["loops"]["fit_loop"]
        batches = loop["epoch_loop.batch_progress"]
        seen, current = int(batches["total"]["completed"]), int(batches["current"]["completed"])
        epochs_done = int(loop["epoch_progress"]["current"]["completed"])
    except (KeyError, TypeError, ValueError):
        return None, None
    if batches.get("is_last_batch"):
        return current or None, seen
    if epochs_done > 0 and (seen - current) % epochs_done == 0:
        return (seen - current) // epochs_done or None, seen
    return None, seen


def _optimizer_steps(optimizer: Any) -> int | None:
    if not isinstance(optimizer, dict):
        return None
    steps = [s.get("step") for s in optimizer.get("state", {}).values() if isinstance(s, dict)]
    steps = [_int_or_none(s) for s in steps if s is not None]
    return max(steps) if steps else None


def _int_or_none(value: Any) -> int | None:
    if value is None:
        return None
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return None
