"""EEGPT's channel vocabulary: the 62 names whose positions index ``chan_embed``.

The order is part of the released checkpoint (row ``i`` of ``chan_embed.weight`` belongs
to ``VOCABULARY[i]``) and must never change. AF7, AF8, PO5 and PO6 exist in the
vocabulary but were not used in pretraining, so their embeddings are untrained.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence

from tune_eegpt.channel_names import OLD_TO_NEW_10_20, canonical_channel_name

VOCABULARY: tuple[str, ...] = (
    "FP1",
    "FPZ",
    "FP2",
    "AF7",
    "AF3",
    "AF4",
    "AF8",
    "F7",
    "F5",
    "F3",
    "F1",
    "FZ",
    "F2",
    "F4",
    "F6",
    "F8",
    "FT7",
    "FC5",
    "FC3",
    "FC1",
    "FCZ",
    "FC2",
    "FC4",
    "FC6",
    "FT8",
    "T7",
    "C5",
    "C3",
    "C1",
    "CZ",
    "C2",
    "C4",
    "C6",
    "T8",
    "TP7",
    "CP5",
    "CP3",
    "CP1",
    "CPZ",
    "CP2",
    "CP4",
    "CP6",
    "TP8",
    "P7",
    "P5",
    "P3",
    "P1",
    "PZ",
    "P2",
    "P4",
    "P6",
    "P8",
    "PO7",
    "PO5",
    "PO3",
    "POZ",
    "PO4",
    "PO6",
    "PO8",
    "O1",
    "OZ",
    "O2",
)
VOCABULARY_SIZE = len(VOCABULARY)  # 62 = rows of chan_embed
_INDEX = {name: i for i, name in enumerate(VOCABULARY)}


def channel_indices(names: Sequence[str]) -> list[int]:
    """Vocabulary positions of ``names``, in order.

    Matching is case-insensitive and accepts TUH labels and the old 10-20 names
    (``'EEG T3-REF'`` -> T7, ``'Fp1'`` -> FP1; a trailing ``.`` as in PhysioNet files is
    dropped). Unknown or repeated channels are a ``ValueError`` naming them.
    """
    if isinstance(names, str):
        raise TypeError(f"expected a sequence of channel names, got the string {names!r}")
    if len(names) == 0:
        raise ValueError("no channels given: the encoder needs at least one channel name")
    canonical = [canonical_channel_name(str(n).strip().rstrip(".")) for n in names]
    unknown = [(raw, c) for raw, c in zip(names, canonical, strict=True) if c not in _INDEX]
    if unknown:
        raise ValueError(
            f"channel(s) not in EEGPT's {VOCABULARY_SIZE}-channel vocabulary: "
            + ", ".join(_describe_unknown(raw, c) for raw, c in unknown)
            + ". Drop them from data.channels or rename them to 10-10 names."
        )
    seen: dict[str, str] = {}
    repeated = []
    for raw, c in zip(names, canonical, strict=True):
        if c in seen:
            repeated.append(f"{raw!r} (same as {seen[c]!r})")
        seen.setdefault(c, raw)
    if repeated:
        raise ValueError(f"channel(s) given twice: {', '.join(repeated)}")
    return [_INDEX[c] for c in canonical]


def _describe_unknown(raw: str, canonical: str) -> str:
    notes = []
    if canonical != str(raw).strip().upper():
        notes.append(f"read as {canonical!r}")
    candidates = list(VOCABULARY) + list(OLD_TO_NEW_10_20)
    close = difflib.get_close_matches(canonical, candidates, n=4, cutoff=0.5)
    if close:
        notes.append(f"close matches: {', '.join(close)}")
    return repr(raw) + (f" ({'; '.join(notes)})" if notes else "")
