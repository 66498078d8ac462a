"""The window cache a run uses: the configured TUAB tree, or the synthetic default corpus."""

from __future__ import annotations

import os
from pathlib import Path

from tune_eegpt.config import DataConfig
from tune_eegpt.data.build import prepare_cache
from tune_eegpt.data.synthetic import SyntheticSpec, ensure_synthetic_corpus


def default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def synthetic_spec(cfg: DataConfig) -> SyntheticSpec:
    return SyntheticSpec(
        subjects=cfg.synthetic_subjects, seed=cfg.synthetic_seed, effect=cfg.synthetic_effect
    )


def ensure_synthetic_cache(cfg: DataConfig, workers: int | None = None) -> Path:
    """Generates the synthetic corpus under ``<cache_dir>/synthetic/<spec hash>/`` unless it
    is already complete, then builds or reuses its window cache under
    ``<cache_dir>/windows/<key>/`` and returns that directory."""
    cache_dir = Path(cfg.cache_dir).expanduser()
    corpus = ensure_synthetic_corpus(cache_dir / "synthetic", synthetic_spec(cfg))
    return prepare_cache(cfg, corpus, cache_dir / "windows", workers or default_workers())


def ensure_cache(cfg: DataConfig, workers: int | None = None) -> Path:
    """The window cache of ``cfg.data_root``, or of the synthetic corpus when it is None."""
    if cfg.data_root is None:
        return ensure_synthetic_cache(cfg, workers)
    out = Path(cfg.cache_dir).expanduser() / "windows"
    return prepare_cache(cfg, cfg.data_root, out, workers or default_workers())
