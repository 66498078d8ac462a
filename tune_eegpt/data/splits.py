"""Subject-wise train/validation split, seeded and stratified by label; eval is the test set.

The split is a pure function of the subjects found, their labels, the seed and the
validation fraction; it is written next to the cache as a CSV (one row per subject) so
it can be audited and reproduced.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from tune_eegpt.data.shards import atomic_write_bytes

SPLIT_NAMES = ("train", "val", "test")


def split_file_name(seed: int, val_fraction: float) -> str:
    return f"splits-seed{seed}-val{val_fraction:g}.csv"


def assign_subject_splits(recordings: pd.DataFrame, val_fraction: float, seed: int) -> pd.DataFrame:
    """``recordings`` (columns subject, split in {train, eval}, label) -> one row per
    (subject, source split) with columns subject, source_split, label, split.

    Subjects of the ``eval`` folder are ``test``. Subjects of the ``train`` folder go to
    ``train`` or ``val``: within each label stratum (a subject's majority label, ties
    abnormal), subjects are sorted, permuted with ``seed``, and ``round(val_fraction * n)``
    of them (at least one and at most n - 1 when the stratum has two or more) become
    ``val``. The result depends only on the set of subjects, never on row order."""
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction={val_fraction} must lie in (0, 1)")
    per_subject = (
        recordings.groupby(["split", "subject"], sort=True)["label"]
        .mean()
        .ge(0.5)
        .astype(int)
        .rename("label")
        .reset_index()
        .rename(columns={"split": "source_split"})
    )
    per_subject["split"] = np.where(per_subject["source_split"] == "eval", "test", "train")
    rng = np.random.default_rng(seed)
    for label in (0, 1):
        stratum = per_subject.index[
            (per_subject["source_split"] == "train") & (per_subject["label"] == label)
        ]
        n = len(stratum)
        n_val = min(max(round(val_fraction * n), 1), n - 1) if n >= 2 else 0
        chosen = rng.permutation(n)[:n_val]
        per_subject.loc[stratum[chosen], "split"] = "val"
    return per_subject.sort_values(["source_split", "subject"]).reset_index(drop=True)


def write_splits(splits: pd.DataFrame, path: Path) -> None:
    atomic_write_bytes(path, splits.to_csv(index=False).encode())


def read_splits(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype={"subject": str, "source_split": str, "split": str})
