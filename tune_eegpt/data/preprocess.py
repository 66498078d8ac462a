"""One EDF recording -> windows in microvolts, or the reason it cannot be used.

MNE does all signal work (reading, band-pass, notch, resampling); this module only picks
channels, checks the recording is usable, and cuts and screens fixed-length windows.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import mne
import numpy as np

from tune_eegpt.data.channel_pick import match_channels
from tune_eegpt.data.settings import Preprocessing

# Reasons a file is rejected: the manifest's vocabulary.
UNREADABLE = "unreadable EDF"
TRUNCATED = "truncated EDF"
MISSING_CHANNELS = "missing required channels"
TOO_SHORT = "shorter than one window"
SFREQ_TOO_LOW = "sampling rate too low for band-pass"
ALL_WINDOWS_REJECTED = "all windows rejected"
PREPROCESSING_FAILED = "preprocessing failed"

# Reasons a single window is dropped (counted, not listed).
WINDOW_REJECTIONS = ("flat", "non_finite", "amplitude")

_MNE_TRUNCATION_WARNING = "does not match the file size"


@dataclass
class Rejection:
    reason: str  # one of the constants above, or several joined by "; "
    detail: str  # what was found, for each reason in the same order


@dataclass
class RecordingWindows:
    windows: np.ndarray  # (n, C, T) in microvolts, the cache dtype
    window_index: np.ndarray  # (n,) position among all windows cut from the recording
    start_s: np.ndarray  # (n,) start time of each window in the source recording
    source_sfreq: float
    duration_s: float  # signal length used, after the start crop
    rejected_windows: dict[str, int] = field(default_factory=dict)


def read_recording(path: str | Path, settings: Preprocessing) -> RecordingWindows | Rejection:
    """Reads, checks and preprocesses one EDF file; never raises for a bad file."""
    raw_or_rejection = _open_edf(path)
    if isinstance(raw_or_rejection, Rejection):
        return raw_or_rejection
    raw = raw_or_rejection
    source_sfreq = float(raw.info["sfreq"])

    # Every header-level problem at once, so that a fixed file is not rejected again for
    # a reason that was there all along.
    found, missing = match_channels(raw.ch_names, settings.channels)
    problems = []
    if missing:
        problems.append((MISSING_CHANNELS, ", ".join(missing)))
    if settings.h_freq >= source_sfreq / 2:
        nyquist = f"{source_sfreq:g} Hz has its Nyquist frequency at or below h_freq="
        problems.append((SFREQ_TOO_LOW, f"{nyquist}{settings.h_freq:g} Hz"))
    usable_s = raw.n_times / source_sfreq - settings.crop_start_s
    if usable_s < settings.window_s:
        crop = f"{usable_s:.1f} s after a {settings.crop_start_s:g} s start crop"
        problems.append((TOO_SHORT, f"{crop}, but a window is {settings.window_s:g} s"))
    if problems:
        return Rejection("; ".join(r for r, _ in problems), "; ".join(d for _, d in problems))

    try:
        data_uv = _filter_and_resample(raw, found, settings)  # (C, N) at settings.sfreq
    except (ValueError, RuntimeError, OSError) as exc:
        return Rejection(PREPROCESSING_FAILED, f"{type(exc).__name__}: {exc}")

    windows, window_index, counts = _cut_windows(data_uv, settings)
    if len(windows) == 0:
        summary = ", ".join(f"{k}: {v}" for k, v in counts.items() if v)
        return Rejection(ALL_WINDOWS_REJECTED, summary or "no window fits the recording")
    return RecordingWindows(
        windows=windows.astype(settings.cache_dtype),
        window_index=window_index,
        start_s=settings.crop_start_s + window_index * settings.stride_s,
        source_sfreq=source_sfreq,
        duration_s=data_uv.shape[1] / settings.sfreq,
        rejected_windows=counts,
    )


def _open_edf(path: str | Path) -> mne.io.BaseRaw | Rejection:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            raw = mne.io.read_raw_edf(path, preload=False, verbose="warning")
        except Exception as exc:  # any parser failure means "unreadable"
            return Rejection(UNREADABLE, f"{type(exc).__name__}: {exc}")
    for warning in caught:
        if _MNE_TRUNCATION_WARNING in str(warning.message):
            return Rejection(TRUNCATED, "the header's record count does not match the file size")
    return raw


def _filter_and_resample(
    raw: mne.io.BaseRaw, source_labels: list[str], settings: Preprocessing
) -> np.ndarray:
    raw = raw.pick(source_labels)
    raw.rename_channels(dict(zip(source_labels, settings.channels, strict=True)))
    raw.reorder_channels(list(settings.channels))
    raw.set_channel_types(dict.fromkeys(settings.channels, "eeg"))
    raw.load_data(verbose="error")
    # Band-pass and notch at the source rate, then resample: the low-pass of the band-pass
    # also keeps the resampling free of aliasing.
    raw.filter(settings.l_freq, settings.h_freq, verbose="error")
    if settings.notch_hz is not None and settings.notch_hz < raw.info["sfreq"] / 2:
        raw.notch_filter(settings.notch_hz, verbose="error")
    if raw.info["sfreq"] != settings.sfreq:
        raw.resample(settings.sfreq, verbose="error")
    if settings.crop_start_s > 0:
        raw.crop(tmin=settings.crop_start_s, verbose="error")
    return raw.get_data(units="uV")


def _cut_windows(
    data_uv: np.ndarray, settings: Preprocessing
) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """(C, N) -> windows (n, C, T) that pass the screens, their indices, drop counts."""
    length, stride = settings.window_samples, settings.stride_samples
    counts = dict.fromkeys(WINDOW_REJECTIONS, 0)
    if data_uv.shape[1] < length:
        return np.empty((0, data_uv.shape[0], length)), np.empty(0, dtype=np.int64), counts
    all_windows = np.lib.stride_tricks.sliding_window_view(data_uv, length, axis=1)[:, ::stride]
    all_windows = all_windows.transpose(1, 0, 2)  # (n, C, T), still a view
    non_finite = ~np.isfinite(all_windows).all(axis=(1, 2))
    with np.errstate(invalid="ignore"):
        flat = (np.ptp(all_windows, axis=2) < settings.flat_ptp_uv).any(axis=1) & ~non_finite
        too_large = (np.abs(all_windows).max(axis=(1, 2)) > settings.amplitude_bound_uv) & ~(
            non_finite | flat
        )
    counts["non_finite"] = int(non_finite.sum())
    counts["flat"] = int(flat.sum())
    counts["amplitude"] = int(too_large.sum())
    keep = np.flatnonzero(~(non_finite | flat | too_large))
    return np.ascontiguousarray(all_windows[keep]), keep, counts
