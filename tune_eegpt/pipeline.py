"""From a run config to a ready ProbeTrainer: window cache, frozen encoder, features, head.

``prepare_data`` does the expensive, shared work once per machine (decode EDF into the
window cache; run the frozen encoder once into the feature cache). ``build_trainer``
is what every run or search trial calls: it opens those caches memory-mapped (once per
process; an actor reused for the next trial keeps them open) and builds a fresh head.
"""

from __future__ import annotations

import fcntl
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from tune_eegpt.config import RunConfig
from tune_eegpt.data.default_cache import ensure_cache
from tune_eegpt.data.window_cache import WindowCache, WindowSplit
from tune_eegpt.models.eegpt import build_encoder
from tune_eegpt.models.probe import build_probe
from tune_eegpt.training.batches import BatchSource, RowSubset
from tune_eegpt.training.features import FeatureBatches, build_feature_cache
from tune_eegpt.training.trainer import ProbeTrainer


@dataclass(frozen=True)
class PreparedData:
    """Where a run's caches are, as plain strings (it travels inside Tune configs)."""

    window_cache: str
    feature_cache: str | None  # None: the encoder runs live (a trainable adapter)

    def to_dict(self) -> dict[str, str | None]:
        return asdict(self)

    def exists(self) -> bool:
        paths = [self.window_cache] + ([self.feature_cache] if self.feature_cache else [])
        return all(Path(p).exists() for p in paths)


def uses_feature_cache(cfg: RunConfig) -> bool:
    """Features can be computed once only when nothing trainable precedes the encoder."""
    return cfg.model.encoder != "none" and cfg.model.feature_cache and not cfg.probe.adapter


def prepare_data(cfg: RunConfig, workers: int = 1, progress: bool = True) -> PreparedData:
    """Builds or reuses the window cache (and the feature cache, where it applies).
    Serialised by a lock file, so concurrent callers on one machine build it once."""
    cache_root = Path(cfg.data.cache_dir).expanduser()
    cache_root.mkdir(parents=True, exist_ok=True)
    with _machine_lock(cache_root / ".prepare.lock"):
        window_dir = ensure_cache(cfg.data, workers=workers)
        feature_path = None
        if uses_feature_cache(cfg):
            cache = open_window_cache(str(window_dir), cfg.data.split_seed, cfg.data.val_fraction)
            encoder = load_encoder(cfg, tuple(cache.channels))
            all_windows = WindowSplit("all", cache.windows, cache.meta, cache.channels, cache.sfreq)
            feature_path = build_feature_cache(
                encoder, all_windows, cache_root / "features", key=cache.key,
                batch_size=64, progress=progress,
                device="cuda" if torch.cuda.is_available() else "cpu",
            )  # fmt: skip
    return PreparedData(str(window_dir), str(feature_path) if feature_path else None)


def build_trainer(
    cfg: RunConfig, prepared: PreparedData, log_dir: str | Path | None = None
) -> ProbeTrainer:
    """A fresh ProbeTrainer for ``cfg`` over the prepared caches."""
    cache = open_window_cache(prepared.window_cache, cfg.data.split_seed, cfg.data.val_fraction)
    train, val = split_sources(prepared, cache, "train"), split_sources(prepared, cache, "val")
    torch.manual_seed(cfg.train.seed)  # the head's initial weights depend on the seed only
    encoder = None
    if prepared.feature_cache is not None:
        n_patches, _, embed_dim = open_features(prepared.feature_cache).feature_shape
    else:
        encoder = load_encoder(cfg, tuple(cache.channels))
        n_samples = round(cfg.data.window_s * cfg.data.sfreq)
        n_patches, embed_dim = encoder.num_patches(n_samples), encoder.embed_dim
    adapter, head = build_probe(cfg.probe, len(cache.channels), n_patches, embed_dim)
    return ProbeTrainer(cfg, head, train, val, encoder=encoder, adapter=adapter, log_dir=log_dir)


def split_sources(prepared: PreparedData, cache: WindowCache, split: str) -> BatchSource:
    """The rows of ``split`` as features (cached) or as windows (live encoder)."""
    if prepared.feature_cache is None:
        return cache.split(split)
    rows = np.flatnonzero(cache.meta["split"].to_numpy() == split)
    return RowSubset(open_features(prepared.feature_cache), rows)


@lru_cache(maxsize=4)
def open_window_cache(path: str, split_seed: int, val_fraction: float) -> WindowCache:
    return WindowCache.open(path, split_seed=split_seed, val_fraction=val_fraction)


@lru_cache(maxsize=4)
def open_features(path: str) -> FeatureBatches:
    return FeatureBatches.open(path)


_ENCODERS: dict[tuple, torch.nn.Module] = {}


def load_encoder(cfg: RunConfig, channels: tuple[str, ...]) -> torch.nn.Module:
    """The frozen encoder, built once per process for the same model settings."""
    key = (tuple(sorted(vars(cfg.model).items())), channels)
    if key not in _ENCODERS:
        _ENCODERS[key] = build_encoder(cfg.model, list(channels))
    return _ENCODERS[key]


@contextmanager
def _machine_lock(path: Path):
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
