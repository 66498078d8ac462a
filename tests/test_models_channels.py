"""EEGPT channel vocabulary and the mapping of dataset channel names onto it."""

from __future__ import annotations

import pytest

from tune_eegpt.models.channels import channel_indices


def test_case_insensitive_tuh_labels_and_old_names() -> None:
    assert channel_indices(["fp1", "Fz", "cz"]) == [0, 11, 29]
    assert channel_indices(["EEG T3-REF", "EEG T4-LE", "T5", "t6"]) == [25, 33, 43, 51]
    assert channel_indices(["Fp1.", "Oz."]) == [0, 60]


def test_unknown_channels_are_named_with_close_matches() -> None:
    with pytest.raises(ValueError) as info:
        channel_indices(["FP1", "EEG FPX-REF", "A1", "EKG"])
    text = str(info.value)
    assert "'EEG FPX-REF' (read as 'FPX'; close matches: FPZ" in text
    assert "'A1'" in text and "'EKG'" in text and "'FP1'" not in text


def test_repeated_and_empty_channel_lists_are_errors() -> None:
    with pytest.raises(ValueError, match="given twice: 'T7' \\(same as 'T3'\\)"):
        channel_indices(["T3", "T7"])
    with pytest.raises(ValueError, match="no channels"):
        channel_indices([])
    with pytest.raises(TypeError):
        channel_indices("FP1")
