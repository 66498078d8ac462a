"""The preprocessing settings a window cache is built with, and the cache key over them."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass

import pandas as pd

from tune_eegpt.channel_names import canonical_channel_name
from tune_eegpt.config import DataConfig

# Bump when the shard layout, the window rules or the preprocessing code change what a
# cache holds: every cache key changes with it, so no old cache is read as new.
SCHEMA_VERSION = 1

# A window is flat when some channel's peak-to-peak is below this (a disconnected lead).
FLAT_PTP_UV = 0.1


@dataclass(frozen=True)
class Preprocessing:
    """Everything that decides the windows' content; all of it enters the cache key."""

    channels: tuple[str, ...]
    sfreq: float
    window_s: float
    stride_s: float
    crop_start_s: float
    l_freq: float
    h_freq: float
    notch_hz: float | None
    amplitude_bound_uv: float
    flat_ptp_uv: float
    cache_dtype: str

    @classmethod
    def from_config(cls, cfg: DataConfig) -> Preprocessing:
        channels = tuple(canonical_channel_name(c) for c in cfg.channels)
        duplicates = sorted({c for c in channels if channels.count(c) > 1})
        if duplicates:
            raise ValueError(f"data.channels names {duplicates} more than once: {cfg.channels}")
        if cfg.h_freq >= cfg.sfreq / 2:
            raise ValueError(
                f"data.h_freq={cfg.h_freq} must lie below the Nyquist frequency of the target "
                f"rate data.sfreq={cfg.sfreq} ({cfg.sfreq / 2} Hz); lower h_freq or raise sfreq"
            )
        return cls(
            channels=channels,
            sfreq=float(cfg.sfreq),
            window_s=float(cfg.window_s),
            stride_s=float(cfg.stride_s),
            crop_start_s=float(cfg.crop_start_s),
            l_freq=float(cfg.l_freq),
            h_freq=float(cfg.h_freq),
            notch_hz=None if cfg.notch_hz is None else float(cfg.notch_hz),
            amplitude_bound_uv=float(cfg.amplitude_bound_uv),
            flat_ptp_uv=FLAT_PTP_UV,
            cache_dtype=cfg.cache_dtype,
        )

    @property
    def window_samples(self) -> int:
        return round(self.window_s * self.sfreq)

    @property
    def stride_samples(self) -> int:
        return round(self.stride_s * self.sfreq)

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "channels": list(self.channels)}


def cache_key(settings: Preprocessing, recordings: pd.DataFrame) -> str:
    """Hash of the schema version, the settings and the file list (path, size, mtime).

    A changed setting or a touched, added or removed file gives a new key."""
    files = recordings[["path", "size", "mtime_ns"]].itertuples(index=False, name=None)
    blob = json.dumps(
        {
            "schema": SCHEMA_VERSION,
            "settings": settings.to_dict(),
            "files": sorted([str(p), int(s), int(m)] for p, s, m in files),
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
