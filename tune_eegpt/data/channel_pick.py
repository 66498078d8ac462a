"""Match a recording's channel labels to the configured channel set, by canonical name."""

from __future__ import annotations

from collections.abc import Sequence

from tune_eegpt.channel_names import canonical_channel_name


def match_channels(labels: Sequence[str], wanted: Sequence[str]) -> tuple[list[str], list[str]]:
    """Returns ``(source_labels, missing)``: for each wanted channel (in the wanted order)
    the recording's label that spells it, and the wanted channels no label spells.

    ``['EEG FP1-REF', 'EEG T3-LE', 'EKG']`` with ``['FP1', 'T7', 'O1']`` ->
    ``(['EEG FP1-REF', 'EEG T3-LE'], ['O1'])``. When two labels spell the same channel
    (e.g. ``-REF`` and ``-LE``), the first one in the file wins."""
    by_name: dict[str, str] = {}
    for label in labels:
        by_name.setdefault(canonical_channel_name(label), label)
    wanted_names = [canonical_channel_name(w) for w in wanted]
    found = [by_name[w] for w in wanted_names if w in by_name]
    missing = [w for w in wanted_names if w not in by_name]
    return found, missing
