"""TUAB path grammar, corpus discovery and channel-name matching (no EDF I/O)."""

from __future__ import annotations

import pytest

from tune_eegpt.data.channel_pick import match_channels
from tune_eegpt.data.tuab_index import index_tuab, parse_tuab_path


@pytest.mark.parametrize(
    ("relpath", "expected"),
    [
        (
            "edf/train/normal/01_tcp_ar/aaaaamye_s001_t000.edf",
            {
                "split": "train",
                "label_name": "normal",
                "label": 0,
                "subject": "aaaaamye",
                "session": 1,
                "token": 0,
                "recording": "aaaaamye_s001_t000",
            },
        ),
        (
            "edf/eval/abnormal/01_tcp_ar/aaaaapys_s002_t001.edf",
            {
                "split": "eval",
                "label_name": "abnormal",
                "label": 1,
                "subject": "aaaaapys",
                "session": 2,
                "token": 1,
                "recording": "aaaaapys_s002_t001",
            },
        ),
        (  # root given as the edf folder itself; montage folder at another depth
            "train/abnormal/02_tcp_le/x/aaaaaaaq_s004_t002.edf",
            {
                "split": "train",
                "label_name": "abnormal",
                "label": 1,
                "subject": "aaaaaaaq",
                "session": 4,
                "token": 2,
                "recording": "aaaaaaaq_s004_t002",
            },
        ),
    ],
)
def test_parser_reads_literal_tuab_paths(relpath: str, expected: dict) -> None:
    assert parse_tuab_path(relpath) == expected


@pytest.mark.parametrize(
    "relpath",
    [
        "edf/train/normal/01_tcp_ar/aaaaamye_s001_t000.txt",  # not EDF
        "edf/dev/normal/01_tcp_ar/aaaaamye_s001_t000.edf",  # unknown split
        "edf/train/unknown/01_tcp_ar/aaaaamye_s001_t000.edf",  # unknown label
        "edf/train/normal/01_tcp_ar/aaaaamye_s1_t000.edf",  # session not 3 digits
        "edf/train/normal/01_tcp_ar/recording.edf",  # not a TUAB name
        "aaaaamye_s001_t000.edf",  # no split/label folders
        "edf/train/normal/01_tcp_ar/AAAAAMYE_s001_t000.edf",  # TUAB ids are lower case
    ],
)
def test_parser_rejects_other_paths(relpath: str) -> None:
    assert parse_tuab_path(relpath) is None


def test_index_walks_tree_counts_ignored_and_reads_no_edf(tmp_path) -> None:
    files = [
        "edf/train/normal/01_tcp_ar/aaaaamye_s001_t000.edf",
        "edf/train/abnormal/01_tcp_ar/aaaaaaaq_s002_t000.edf",
        "edf/eval/normal/01_tcp_ar/aaaaapys_s001_t000.edf",
    ]
    others = [
        "README.txt",
        "edf/train/normal/01_tcp_ar/notes.csv",
        "edf/dev/normal/a_s001_t000.edf",
    ]
    for rel in files + others:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"not even EDF: the index must not open it")
    index = index_tuab(tmp_path)
    assert sorted(index.recordings["relpath"]) == sorted(files)
    assert sorted(index.ignored) == sorted(others)
    row = index.recordings.set_index("recording").loc["aaaaaaaq_s002_t000"]
    assert (row["split"], row["label"], row["subject"], row["session"]) == (
        "train",
        1,
        "aaaaaaaq",
        2,
    )
    assert (index.recordings["size"] > 0).all()


def test_index_of_missing_root_says_what_was_expected(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="expected a TUAB tree"):
        index_tuab(tmp_path / "nope")


def test_channel_matching_accepts_tuab_spellings() -> None:
    labels = [
        "EEG FP1-REF",
        "eeg fp2-le",
        " EEG T3-REF ",
        "EEG T4-LE",
        "EEG T5-REF",
        "T6",
        "EEG EKG1-REF",
        "PHOTIC-REF",
        "IBI",
        "EEG CZ - REF",
    ]
    wanted = ["FP1", "FP2", "T7", "T8", "P7", "P8", "CZ"]
    found, missing = match_channels(labels, wanted)
    assert found == [
        "EEG FP1-REF",
        "eeg fp2-le",
        " EEG T3-REF ",
        "EEG T4-LE",
        "EEG T5-REF",
        "T6",
        "EEG CZ - REF",
    ]
    assert missing == []


def test_channel_matching_reports_missing_in_wanted_order() -> None:
    found, missing = match_channels(["EEG FP1-REF", "EEG O1-LE"], ["O2", "FP1", "T3", "O1"])
    assert found == ["EEG FP1-REF", "EEG O1-LE"]
    assert missing == ["O2", "T7"]  # old names are reported in the EEGPT vocabulary


def test_first_spelling_wins_when_a_channel_appears_twice() -> None:
    found, _ = match_channels(["EEG C3-REF", "EEG C3-LE"], ["C3"])
    assert found == ["EEG C3-REF"]
