"""The per-step log of a run: ``steps.csv`` and TensorBoard events, keyed on global_step.

Each logged step appears once, also after a resume from a checkpoint older than the last
logged step (``train --resume``, a Tune trial restarted after a crash) and after a hard
kill: opening the log for a run that continues at step ``s`` drops the CSV rows at or after
``s`` and starts new event files with TensorBoard's purge marker (a ``SessionLog.START``
event at step ``s``: TensorBoard discards the older events at or after ``s``). Per-step
scalars (``tensorboard/train``) and validation scalars (``tensorboard/val``) are separate
streams because a checkpoint taken at an epoch's end comes after that epoch's validation,
logged at the same step: the training steps from ``s`` on are redone, that validation is not.

Events are written synchronously, one ``write`` call per record, with no writer thread:
tensorboardX's ``SummaryWriter`` hands events to a background thread through a queue, and a
Ctrl-C that lands inside the queue's ``put`` leaves its lock held, so ``close()`` then waits
forever. CSV rows are flushed as they are written, so a killed run loses none.
"""

from __future__ import annotations

import csv
import os
import socket
import struct
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

STEP_FIELDS = ("global_step", "epoch", "lr", "loss", "grad_norm")
CSV_NAME = "steps.csv"
TENSORBOARD_DIR = "tensorboard"


class StepLog:
    """``steps.csv`` (and, with ``tensorboard``, event files under ``tensorboard/train`` and
    ``tensorboard/val``) in ``folder``. Opened on the first write; ``rewind`` says where
    this process's history starts, so that what an abandoned continuation logged at or
    after it is dropped."""

    def __init__(self, folder: str | Path, tensorboard: bool) -> None:
        self.folder = Path(folder)
        self.tensorboard = tensorboard
        self.start_step = 0
        self.evaluated_at_start = False
        self._csv_file = None
        self._csv = None
        self._events: _EventFile | None = None
        self._eval_events: _EventFile | None = None

    def rewind(self, start_step: int, evaluated_at_start: bool) -> None:
        """The run now continues at ``start_step`` (a checkpoint was loaded);
        ``evaluated_at_start``: the validation logged at ``start_step`` is part of it."""
        self.close()
        self.start_step = start_step
        self.evaluated_at_start = evaluated_at_start

    def write_step(self, record: Mapping[str, float]) -> None:
        self._open()
        self._csv.writerow(record)
        self._csv_file.flush()  # a killed run keeps every row written so far
        if self._events is not None:
            step = int(record["global_step"])
            values = {f"train/{k}": record[k] for k in ("lr", "loss", "grad_norm")}
            self._events.scalars(values, step)

    def write_eval(self, values: Mapping[str, float], step: int) -> None:
        """Validation scalars at ``step`` (TensorBoard only)."""
        self._open()
        if self._eval_events is not None:
            self._eval_events.scalars(values, step)

    def flush(self) -> None:
        """Everything written so far reaches the disk (called before each checkpoint)."""
        if self._csv_file is not None:
            self._csv_file.flush()
            os.fsync(self._csv_file.fileno())
        for events in (self._events, self._eval_events):
            if events is not None:
                events.flush()

    def close(self) -> None:
        """Closes the files; once, even when closing one fails (a full disk refuses the
        last flush): a second call has nothing left to do."""
        files = [e for e in (self._events, self._eval_events) if e is not None]
        csv_file = self._csv_file
        self._events = self._eval_events = None
        self._csv_file = self._csv = None
        try:
            for events in files:
                events.close()
        finally:
            if csv_file is not None:
                csv_file.close()

    def _open(self) -> None:
        if self._csv_file is not None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / CSV_NAME
        truncate_steps_csv(path, self.start_step)
        self._csv_file = path.open("a", newline="")
        self._csv = csv.DictWriter(self._csv_file, STEP_FIELDS)
        if self._csv_file.tell() == 0:
            self._csv.writeheader()
        if self.tensorboard:
            board = self.folder / TENSORBOARD_DIR
            self._events = _EventFile(board / "train", purge_step=self.start_step)
            eval_purge = self.start_step + int(self.evaluated_at_start)
            self._eval_events = _EventFile(board / "val", purge_step=eval_purge)


def read_steps_csv(path: str | Path) -> list[dict[str, str]]:
    """The complete rows of a steps.csv (a row cut short by a kill is left out)."""
    path = Path(path)
    if not path.is_file():
        return []
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    return [r for r in rows if _complete(r)]


def truncate_steps_csv(path: Path, start_step: int) -> None:
    """Keeps the rows before ``start_step``; rewritten atomically (temp file + rename)."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    kept = [r for r in read_steps_csv(path) if int(r["global_step"]) < start_step]
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", newline="") as fh:
            writer = csv.DictWriter(fh, STEP_FIELDS)
            writer.writeheader()
            writer.writerows({k: r[k] for k in STEP_FIELDS} for r in kept)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _complete(row: dict[str, str | None]) -> bool:
    if any(row.get(k) in (None, "") for k in STEP_FIELDS) or None in row:
        return False
    try:
        int(row["global_step"])
        [float(row[k]) for k in STEP_FIELDS[2:]]
    except ValueError:
        return False
    return True


class _EventFile:
    """A TensorBoard event file (TFRecord framing), written in the caller's thread."""

    def __init__(self, folder: Path, purge_step: int) -> None:
        from tensorboardX.proto.event_pb2 import Event, SessionLog

        self._event = Event
        folder.mkdir(parents=True, exist_ok=True)
        # TensorBoard reads a folder's event files in name order; nanoseconds keep a file
        # opened later in the same second after the earlier one.
        name = f"events.out.tfevents.{time.time_ns()}.{socket.gethostname()}.{os.getpid()}"
        self._fh = (folder / name).open("ab")
        self._write(Event(wall_time=time.time(), file_version="brain.Event:2"))
        start = SessionLog(status=SessionLog.START)
        self._write(Event(wall_time=time.time(), step=purge_step, session_log=start))
        self.flush()

    def scalars(self, values: Mapping[str, float], step: int) -> None:
        from tensorboardX.proto.summary_pb2 import Summary

        summary = Summary(
            value=[Summary.Value(tag=k, simple_value=float(v)) for k, v in values.items()]
        )
        self._write(self._event(wall_time=time.time(), step=step, summary=summary))

    def _write(self, event) -> None:
        from tensorboardX.record_writer import masked_crc32c

        data = event.SerializeToString()
        header = struct.pack("<Q", len(data))
        # one write per record: an interrupt cannot leave half a record behind
        self._fh.write(
            header
            + struct.pack("<I", masked_crc32c(header))
            + data
            + struct.pack("<I", masked_crc32c(data))
        )

    def flush(self) -> None:
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        try:
            self._fh.flush()
        finally:
            self._fh.close()
