"""The window cache a run uses: the configured TUAB tree, or the synthetic default corpus."""

from __future__ import annotations

import os
from pathlib import Path

from tune_eegpt.config import DataConfig
from tune_eegpt.data.build import TaskRunner, build_window_cache
from tune_eegpt.data.storage import Location, is_uri
from tune_eegpt.data.synthetic import SyntheticSpec, ensure_synthetic_corpus


def default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def synthetic_spec(cfg: DataConfig) -> SyntheticSpec:
    return SyntheticSpec(
        subjects=cfg.synthetic_subjects, seed=cfg.synthetic_seed, effect=cfg.synthetic_effect
    )


def ensure_synthetic_cache(
    cfg: DataConfig, workers: int | None = None, runner: TaskRunner | None = None
) -> Path | str:
    """Generates the synthetic corpus under ``<cache_dir>/synthetic/<spec hash>/`` unless it
    is already complete, then builds or reuses its window cache under
    ``<cache_dir>/windows/<key>/`` and returns that directory."""
    if is_uri(cfg.cache_dir):
        raise ValueError(
            f"data.cache_dir={cfg.cache_dir!r}: the synthetic corpus is written as EDF files "
            "under the cache folder, which must then be a local folder or shared mount"
        )
    cache_dir = Path(cfg.cache_dir).expanduser()
    corpus = ensure_synthetic_corpus(cache_dir / "synthetic", synthetic_spec(cfg))
    return _build(cfg, corpus, workers, runner)


def ensure_cache(
    cfg: DataConfig, workers: int | None = None, runner: TaskRunner | None = None
) -> Path | str:
    """The window cache of ``cfg.data_root``, or of the synthetic corpus when it is None.
    ``runner`` decides where recordings are decoded (build.py); by default on this machine."""
    if cfg.data_root is None:
        return ensure_synthetic_cache(cfg, workers, runner)
    return _build(cfg, cfg.data_root, workers, runner)


def _build(cfg: DataConfig, corpus: str | Path, workers: int | None, runner) -> Path | str:
    out = Location(cfg.cache_dir).child("windows")
    result = build_window_cache(cfg, corpus, str(out), workers or default_workers(), runner=runner)
    return result.path
