"""Subject-wise train/val split: disjoint, seeded, stratified; eval is always test."""

from __future__ import annotations

import numpy as np
import pandas as pd

from tune_eegpt.data.splits import assign_subject_splits


def recordings(n_train: int = 40, n_eval: int = 10, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_train + n_eval):
        split = "train" if i < n_train else "eval"
        label = i % 2
        for session in range(1, 1 + rng.integers(1, 4)):  # 1-3 recordings per subject
            rows.append(
                {"subject": f"s{i:03d}", "split": split, "label": label, "session": session}
            )
    return pd.DataFrame(rows)


def test_no_subject_is_on_both_sides_and_eval_is_test() -> None:
    recs = recordings()
    splits = assign_subject_splits(recs, val_fraction=0.2, seed=0)
    assert not splits.duplicated(["source_split", "subject"]).any()
    train = set(splits.loc[splits.split == "train", "subject"])
    val = set(splits.loc[splits.split == "val", "subject"])
    test = set(splits.loc[splits.split == "test", "subject"])
    assert train and val and not train & val
    assert test == set(recs.loc[recs.split == "eval", "subject"])
    assert not (train | val) & test
    assert len(val) == 8  # 20% of 40, stratified: 4 per label
    assert splits.loc[splits.split == "val", "label"].value_counts().to_dict() == {0: 4, 1: 4}


def test_same_seed_same_split_whatever_the_row_order() -> None:
    recs = recordings()
    a = assign_subject_splits(recs, 0.2, seed=7)
    b = assign_subject_splits(recs.sample(frac=1.0, random_state=3), 0.2, seed=7)
    pd.testing.assert_frame_equal(a, b)
    c = assign_subject_splits(recs, 0.2, seed=8)
    assert not a["split"].equals(c["split"])


def test_tiny_strata_keep_both_sides_non_empty() -> None:
    splits = assign_subject_splits(recordings(n_train=4, n_eval=2), 0.2, seed=0)
    counts = splits["split"].value_counts().to_dict()
    assert counts == {"train": 2, "val": 2, "test": 2}
