"""Index a TUAB-style tree by path alone: one row per EDF recording, no file is opened.

TUAB (v3.0.x) lays its recordings out as::

    edf/train/normal/01_tcp_ar/aaaaamye_s001_t000.edf
    edf/eval/abnormal/01_tcp_ar/aaaaapys_s002_t001.edf
        |     |        |          |        |    `-- token (file within a session)
        |     |        |          |        `------- session
        |     |        |          `---------------- subject (patient id)
        |     |        `--------------------------- montage folder (any depth, any name)
        |     `------------------------------------ label: normal | abnormal
        `------------------------------------------ split: train | eval (eval is the test set)

The root may be the ``edf`` folder itself or any folder above it. Everything else in
the tree (READMEs, other folders, EDF files whose path does not follow the grammar) is
ignored and counted.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

TUAB_PATH = re.compile(
    r"^(?:.+/)?"
    r"(?P<split>train|eval)/"
    r"(?P<label_name>normal|abnormal)/"
    r"(?:[^/]+/)*"
    r"(?P<subject>[a-z0-9]+)_s(?P<session>\d{3})_t(?P<token>\d{3})\.edf$"
)

LABELS = {"normal": 0, "abnormal": 1}
INDEX_COLUMNS = [
    "recording",
    "path",
    "relpath",
    "split",
    "label_name",
    "label",
    "subject",
    "session",
    "token",
    "size",
    "mtime_ns",
]


@dataclass
class TuabIndex:
    """The recordings found under ``root`` and what was passed over."""

    root: Path
    recordings: pd.DataFrame  # one row per EDF recording, columns INDEX_COLUMNS
    ignored: list[str] = field(default_factory=list)  # paths relative to root

    def __len__(self) -> int:
        return len(self.recordings)


def parse_tuab_path(relpath: str) -> dict[str, str | int] | None:
    """'edf/train/normal/01_tcp_ar/aaaaamye_s001_t000.edf' -> {split: 'train',
    label_name: 'normal', label: 0, subject: 'aaaaamye', session: 1, token: 0,
    recording: 'aaaaamye_s001_t000'}; None if the path does not follow TUAB's grammar."""
    match = TUAB_PATH.match(relpath.replace(os.sep, "/"))
    if match is None:
        return None
    parts = match.groupdict()
    return {
        "recording": f"{parts['subject']}_s{parts['session']}_t{parts['token']}",
        "split": parts["split"],
        "label_name": parts["label_name"],
        "label": LABELS[parts["label_name"]],
        "subject": parts["subject"],
        "session": int(parts["session"]),
        "token": int(parts["token"]),
    }


def index_tuab(root: str | Path) -> TuabIndex:
    """Walks ``root`` and indexes every file whose path follows TUAB's grammar.

    Only names and ``os.stat`` are read (size and mtime enter the cache key)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(
            f"data root {root} is not a directory; expected a TUAB tree with "
            "{train,eval}/{normal,abnormal}/**/*.edf"
        )
    rows: list[dict] = []
    ignored: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()  # a stable walk order, so the index is stable
        for name in sorted(filenames):
            path = Path(dirpath) / name
            relpath = path.relative_to(root).as_posix()
            parsed = parse_tuab_path(relpath)
            if parsed is None:
                ignored.append(relpath)
                continue
            stat = path.stat()
            rows.append(
                {
                    **parsed,
                    "path": str(path.resolve()),
                    "relpath": relpath,
                    "size": stat.st_size,
                    "mtime_ns": stat.st_mtime_ns,
                }
            )
    frame = pd.DataFrame(rows, columns=INDEX_COLUMNS)
    frame = frame.sort_values("relpath", kind="stable").reset_index(drop=True)
    return TuabIndex(root=root, recordings=frame, ignored=ignored)
