"""TUAB discovery, EDF reading with MNE, windowing, the Arrow window cache, subject-wise
splits and the synthetic TUAB-like corpus. Knows nothing of models or training.

    from tune_eegpt.data import WindowCache, ensure_cache
    cache = WindowCache.open(ensure_cache(cfg.data))  # synthetic corpus when data_root is None
    train = cache.split("train")                      # a BatchSource: x in microvolts
"""

from tune_eegpt.data.build import BuildResult, EmptyCacheError, build_window_cache, prepare_cache
from tune_eegpt.data.default_cache import ensure_cache, ensure_synthetic_cache
from tune_eegpt.data.synthetic import SyntheticSpec, write_synthetic_corpus
from tune_eegpt.data.tuab_index import TuabIndex, index_tuab, parse_tuab_path
from tune_eegpt.data.window_cache import ShardedWindows, WindowCache, WindowSplit

__all__ = [
    "BuildResult",
    "EmptyCacheError",
    "ShardedWindows",
    "SyntheticSpec",
    "TuabIndex",
    "WindowCache",
    "WindowSplit",
    "build_window_cache",
    "ensure_cache",
    "ensure_synthetic_cache",
    "index_tuab",
    "parse_tuab_path",
    "prepare_cache",
    "write_synthetic_corpus",
]
