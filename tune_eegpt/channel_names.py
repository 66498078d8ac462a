"""Channel-name spelling shared by the data reader and the encoder's vocabulary.

TUAB writes referential EEG channels as ``EEG FP1-REF`` or ``EEG FP1-LE`` and uses the
old 10-20 temporal names; EEGPT's vocabulary uses the 10-10 names, upper-cased.
"""

from __future__ import annotations

import re

# Old 10-20 names -> their 10-10 successors used by EEGPT.
OLD_TO_NEW_10_20 = {"T3": "T7", "T4": "T8", "T5": "P7", "T6": "P8"}

_TUH_LABEL = re.compile(r"^\s*(?:EEG\s+)?(?P<name>[A-Z0-9]+?)(?:\s*-\s*(?:REF|LE|AR|AVG))?\s*$")


def canonical_channel_name(label: str) -> str:
    """'EEG T3-REF', 'eeg fp1-le', 'Fp1' -> 'T7', 'FP1', 'FP1'. Unmatched labels are
    returned upper-cased and stripped, so that callers can report them."""
    upper = label.strip().upper()
    match = _TUH_LABEL.match(upper)
    name = match.group("name") if match else upper
    return OLD_TO_NEW_10_20.get(name, name)
