"""Reading one EDF file with MNE: channel picking, microvolt scale, resampling to 256 Hz,
window screening, and the reason each kind of unusable file is rejected."""

from __future__ import annotations

from pathlib import Path

import edfio
import numpy as np
import pytest

from tune_eegpt.config import STANDARD_10_20, DataConfig
from tune_eegpt.data import preprocess
from tune_eegpt.data.preprocess import RecordingWindows, Rejection, read_recording
from tune_eegpt.data.settings import Preprocessing

TUAB_EEG = [
    "FP1",
    "FP2",
    "F3",
    "F4",
    "C3",
    "C4",
    "P3",
    "P4",
    "O1",
    "O2",
    "F7",
    "F8",
    "T3",
    "T4",
    "T5",
    "T6",
    "A1",
    "A2",
    "FZ",
    "CZ",
    "PZ",
    "T1",
    "T2",
]
OLD_NAMES = {"T7": "T3", "T8": "T4", "P7": "T5", "P8": "T6"}
SETTINGS = Preprocessing.from_config(DataConfig())


def amplitude_of(name: str) -> float:
    """A distinct 10 Hz amplitude (uV) per electrode, to check channel order and scale."""
    return 20.0 + 3.0 * TUAB_EEG.index(name)


def write_edf(
    path: Path,
    sfreq: float,
    seconds: int,
    electrodes: list[str] = TUAB_EEG,
    suffix: str = "-REF",
    artefact_at_s: float | None = None,
    flat: bool = False,
) -> Path:
    t = np.arange(int(sfreq * seconds)) / sfreq
    signals = []
    for name in electrodes:
        x = amplitude_of(name) * np.sin(2 * np.pi * 10.0 * t) * (0.0 if flat else 1.0)
        if artefact_at_s is not None:
            x = x + 3000.0 * ((t >= artefact_at_s) & (t < artefact_at_s + 1.0))
        signals.append(
            edfio.EdfSignal(
                x,
                sfreq,
                label=f"EEG {name}{suffix}",
                physical_dimension="uV",
                physical_range=(-4000, 4000),
            )
        )
    signals.append(
        edfio.EdfSignal(
            np.zeros_like(t),
            sfreq,
            label="EEG EKG1-REF",
            physical_dimension="uV",
            physical_range=(-1, 1),
        )
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    edfio.Edf(signals).write(path)
    return path


@pytest.mark.parametrize("sfreq", [250.0, 256.0, 512.0])
def test_every_rate_gives_256hz_4s_windows_in_microvolts(tmp_path, sfreq) -> None:
    path = write_edf(tmp_path / "a.edf", sfreq, seconds=20)
    result = read_recording(path, SETTINGS)
    assert isinstance(result, RecordingWindows), result
    assert result.windows.shape == (5, 19, 1024)
    assert result.windows.dtype == np.float16
    assert result.source_sfreq == sfreq
    np.testing.assert_allclose(result.start_s, [0, 4, 8, 12, 16])
    # Channels come out in the configured order, mapped from old names, in microvolts:
    # a 10 Hz sine of amplitude A has RMS A / sqrt(2) (middle window, away from the edges).
    rms = np.sqrt((result.windows[2].astype(np.float64) ** 2).mean(axis=1))
    expected = [amplitude_of(OLD_NAMES.get(c, c)) / np.sqrt(2) for c in STANDARD_10_20]
    np.testing.assert_allclose(rms, expected, rtol=0.03)


def test_le_montage_labels_are_accepted(tmp_path) -> None:
    path = write_edf(tmp_path / "le.edf", 250.0, seconds=8, suffix="-LE")
    assert isinstance(read_recording(path, SETTINGS), RecordingWindows)


def test_windows_beyond_the_amplitude_bound_are_dropped_and_counted(tmp_path) -> None:
    path = write_edf(tmp_path / "art.edf", 256.0, seconds=24, artefact_at_s=9.0)
    result = read_recording(path, SETTINGS)
    assert isinstance(result, RecordingWindows)
    assert result.rejected_windows == {"flat": 0, "non_finite": 0, "amplitude": 1}
    assert list(result.window_index) == [0, 1, 3, 4, 5]
    np.testing.assert_allclose(result.start_s, [0, 4, 12, 16, 20])


def test_start_crop_shifts_window_times(tmp_path) -> None:
    path = write_edf(tmp_path / "c.edf", 250.0, seconds=20)
    cfg = DataConfig(crop_start_s=6.0, stride_s=2.0)
    result = read_recording(path, Preprocessing.from_config(cfg))
    assert isinstance(result, RecordingWindows)
    np.testing.assert_allclose(result.start_s, [6, 8, 10, 12, 14, 16])
    assert result.duration_s == pytest.approx(14.0)


def _garbage(path: Path) -> Path:
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    return path


def _truncated(path: Path) -> Path:
    write_edf(path, 250.0, seconds=12)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    return path


@pytest.mark.parametrize(
    ("make", "reason", "detail"),
    [
        (_garbage, preprocess.UNREADABLE, ""),
        (lambda p: (p.write_bytes(b""), p)[1], preprocess.UNREADABLE, ""),
        (_truncated, preprocess.TRUNCATED, "file size"),
        (
            lambda p: write_edf(p, 250.0, 12, [e for e in TUAB_EEG if e not in ("O2", "T3")]),
            preprocess.MISSING_CHANNELS,
            "T7, O2",
        ),
        (lambda p: write_edf(p, 250.0, 3), preprocess.TOO_SHORT, "3.0 s"),
        (lambda p: write_edf(p, 128.0, 12), preprocess.SFREQ_TOO_LOW, "128 Hz"),
        (lambda p: write_edf(p, 250.0, 12, flat=True), preprocess.ALL_WINDOWS_REJECTED, "flat: 3"),
    ],
    ids=["garbage", "empty", "truncated", "missing", "short", "low-rate", "flat"],
)
def test_unusable_files_are_rejected_with_their_reason(tmp_path, make, reason, detail) -> None:
    result = read_recording(make(tmp_path / "bad.edf"), SETTINGS)
    assert isinstance(result, Rejection)
    assert result.reason == reason
    assert detail in result.detail


def test_a_file_with_several_problems_lists_every_reason_in_one_pass(tmp_path) -> None:
    # 128 Hz, 3 s and two electrodes missing: fixing the labels alone must not be met by a
    # second rejection for the rate.
    kept = [e for e in TUAB_EEG if e not in ("O2", "T3")]
    result = read_recording(write_edf(tmp_path / "bad.edf", 128.0, 3, kept), SETTINGS)
    assert isinstance(result, Rejection)
    assert result.reason == (
        f"{preprocess.MISSING_CHANNELS}; {preprocess.SFREQ_TOO_LOW}; {preprocess.TOO_SHORT}"
    )
    assert result.detail == (
        "T7, O2; 128 Hz has its Nyquist frequency at or below h_freq=75 Hz; "
        "3.0 s after a 0 s start crop, but a window is 4 s"
    )
