"""From a run config to a ready ProbeTrainer: window cache, frozen encoder, features, head.

``prepare_data`` does the expensive, shared work once (decode EDF into the window cache;
run the frozen encoder once into the feature cache): on this machine, or, through
``tune_eegpt.prepare_on_ray``, spread over a Ray cluster with ``prepare_windows`` and
``prepare_features`` as its two stages. ``build_trainer`` is what every run or search
trial calls: it opens those caches memory-mapped (once per process; an actor reused for
the next trial keeps them open) and builds a fresh head. It never decodes or encodes:
caches in object storage are copied to the node's disk once, nothing more.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from tune_eegpt.config import ConfigError, RunConfig
from tune_eegpt.data.build import TaskRunner
from tune_eegpt.data.default_cache import ensure_cache
from tune_eegpt.data.storage import Location, file_lock, is_uri, local_copy
from tune_eegpt.data.window_cache import WindowCache, WindowSplit
from tune_eegpt.models.eegpt import build_encoder
from tune_eegpt.models.probe import build_probe
from tune_eegpt.training.batches import BatchSource, RowSubset
from tune_eegpt.training.features import (
    FeatureBatches,
    build_feature_cache,
    encoder_weights_hash,
    feature_cache_path,
    fingerprint_path,
)
from tune_eegpt.training.onecycle import check_warmup
from tune_eegpt.training.trainer import ProbeTrainer

# where a node keeps its copies of caches that live in object storage
DEFAULT_LOCAL_COPIES = "~/.cache/tune-eegpt/copies"


@dataclass(frozen=True)
class PreparedData:
    """Where a run's caches are, as plain strings (it travels inside Tune configs): local
    paths, paths on a shared mount, or URIs (copied to ``local_copies`` on first use)."""

    window_cache: str
    feature_cache: str | None  # None: the encoder runs live (a trainable adapter)
    local_copies: str = DEFAULT_LOCAL_COPIES

    def to_dict(self) -> dict[str, str | None]:
        return asdict(self)

    def exists(self) -> bool:
        """True when a node can use the caches without building anything (a URI counts:
        it is copied, never rebuilt)."""
        paths = [self.window_cache] + ([self.feature_cache] if self.feature_cache else [])
        return all(is_uri(p) or Path(p).exists() for p in paths)

    def require(self) -> None:
        """Raises FileNotFoundError naming the caches this node cannot reach. Trials call it
        instead of building anything: the search prepares the caches once, before any trial."""
        paths = [self.window_cache] + ([self.feature_cache] if self.feature_cache else [])
        missing = [p for p in paths if not (is_uri(p) or Path(p).exists())]
        if missing:
            raise FileNotFoundError(
                f"prepared cache(s) not found on this node: {', '.join(missing)}; the search "
                "prepares them before its first trial, so on a cluster --cache-dir must be a "
                "shared mount or a URI that every node reaches"
            )

    def on_this_node(self) -> PreparedData:
        """The same caches as local paths: object-storage caches copied here once."""
        root = Path(self.local_copies).expanduser()
        window = local_copy(self.window_cache, root / "windows" / _last_part(self.window_cache))
        feature = self.feature_cache and local_copy(
            self.feature_cache, root / "features" / _last_part(self.feature_cache)
        )
        return PreparedData(str(window), str(feature) if feature else None, self.local_copies)


def uses_feature_cache(cfg: RunConfig) -> bool:
    """Features can be computed once only when nothing trainable precedes the encoder."""
    return cfg.model.encoder != "none" and cfg.model.feature_cache and not cfg.probe.adapter


def prepare_data(
    cfg: RunConfig, workers: int = 1, progress: bool = True, runner: TaskRunner | None = None
) -> PreparedData:
    """Builds or reuses the window cache (and the feature cache, where it applies) on this
    machine (``runner``: where recordings are decoded; build.py). Serialised by a lock
    file, so concurrent callers on one machine build it once."""
    with file_lock(_lock_path(cfg)):
        window_dir = prepare_windows(cfg, workers, runner)
        check_schedule_fits(cfg, window_dir)
        feature_path = None
        if uses_feature_cache(cfg):
            device = "cuda" if torch.cuda.is_available() else "cpu"
            feature_path = prepare_features(cfg, str(window_dir), device=device, progress=progress)
    return PreparedData(str(window_dir), str(feature_path) if feature_path else None)


def check_schedule_fits(cfg: RunConfig, window_cache: Path | str) -> None:
    """``schedule.pct_start`` against the corpus, as soon as its size is known (the window
    cache) and before the feature pass: a warm-up shorter than one optimizer step is
    refused here, not after the encoder has run over every window. A cache in object
    storage is left to the trainer, which checks the same."""
    n_train = train_window_count(cfg, window_cache)
    if n_train is None:
        return
    t = cfg.train
    check_warmup(cfg.schedule.pct_start, math.ceil(n_train / t.batch_size), t.accum_steps, t.epochs)


def train_window_count(cfg: RunConfig, window_cache: Path | str) -> int | None:
    """The train split's size in a local window cache (None for a cache in object storage:
    reading its index there is left to the trainer)."""
    if is_uri(str(window_cache)):
        return None
    cache = open_window_cache(str(window_cache), cfg.data.split_seed, cfg.data.val_fraction)
    return int((cache.meta["split"] == "train").sum())


def prepare_windows(
    cfg: RunConfig, workers: int = 1, runner: TaskRunner | None = None
) -> Path | str:
    """Stage 1: the window cache under ``<cache_dir>/windows/`` (a path or a URI)."""
    return ensure_cache(cfg.data, workers=workers, runner=runner)


def prepare_features(
    cfg: RunConfig,
    window_cache: str,
    *,
    device: str = "cpu",
    progress: bool = True,
    local_copies: str = DEFAULT_LOCAL_COPIES,
    batch_size: int = 64,
) -> str:
    """Stage 2: the frozen encoder over every window of ``window_cache`` into
    ``<cache_dir>/features/`` (bf16 autocast on CUDA). A URI cache is read from a local
    copy and the feature file is uploaded whole when done. Returns its path or URI."""
    windows = local_copy(
        window_cache, Path(local_copies).expanduser() / "windows" / _last_part(window_cache)
    )
    cache = open_window_cache(str(windows), cfg.data.split_seed, cfg.data.val_fraction)
    encoder = load_encoder(cfg, tuple(cache.channels))
    all_windows = WindowSplit("all", cache.windows, cache.meta, cache.channels, cache.sfreq)
    target = Location(cfg.data.cache_dir).child("features")
    local_out = target.path if target.is_local else Path(local_copies).expanduser() / "features"
    dtype = cfg.model.feature_dtype
    expected = feature_cache_path(local_out, encoder_weights_hash(encoder), cache.key, dtype)
    if not target.is_local and target.child(expected.name).exists():
        return str(target.child(expected.name))
    path = build_feature_cache(
        encoder,
        all_windows,
        local_out,
        key=cache.key,
        batch_size=batch_size,
        dtype=dtype,
        progress=progress,
        device=device,
    )
    if target.is_local:
        return str(path)
    target.make_dir()
    sidecar = fingerprint_path(path)
    if sidecar.is_file():  # first: the copy to a node checks the file against it
        target.child(sidecar.name).upload(sidecar)
    target.child(path.name).upload(path)
    return str(target.child(path.name))


def expected_feature_file(cfg: RunConfig, window_key: str, channels: list[str]) -> str:
    """Where ``prepare_features`` puts the features of this encoder (built here to hash
    its weights; nothing is encoded)."""
    encoder = load_encoder(cfg, tuple(channels))
    encoder_hash = encoder_weights_hash(encoder)
    name = feature_cache_path(".", encoder_hash, window_key, cfg.model.feature_dtype).name
    return str(Location(cfg.data.cache_dir).child("features", name))


def _lock_path(cfg: RunConfig) -> Path:
    if is_uri(cfg.data.cache_dir):
        return Path(DEFAULT_LOCAL_COPIES).expanduser() / ".prepare.lock"
    return Path(cfg.data.cache_dir).expanduser() / ".prepare.lock"


def _last_part(location: str) -> str:
    return str(location).rstrip("/").rsplit("/", 1)[-1]


def build_trainer(
    cfg: RunConfig, prepared: PreparedData, log_dir: str | Path | None = None
) -> ProbeTrainer:
    """A fresh ProbeTrainer for ``cfg`` over the prepared caches."""
    prepared = prepared.on_this_node()
    cache = open_window_cache(prepared.window_cache, cfg.data.split_seed, cfg.data.val_fraction)
    train, val = split_sources(prepared, cache, "train"), split_sources(prepared, cache, "val")
    torch.manual_seed(cfg.train.seed)  # the head's initial weights depend on the seed only
    encoder = None
    if prepared.feature_cache is not None:
        features = open_features(prepared.feature_cache)
        features.require_dtype(cfg.model.feature_dtype)  # never read as another dtype
        n_patches, _, embed_dim = features.feature_shape
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


def check_encoder_checkpoint(cfg: RunConfig) -> None:
    """Reads ``model.checkpoint`` and fits it to the encoder the config names, now: a file
    that is unreadable, needs ``trusted_checkpoint`` or holds another size is then refused
    before the corpus is decoded (hours on TUAB), not after. The encoder built is kept
    for the feature pass of this process (``load_encoder``)."""
    if cfg.model.checkpoint is None or cfg.model.encoder == "none":
        return
    try:
        load_encoder(cfg, tuple(cfg.data.channels))
    except (ValueError, FileNotFoundError) as exc:
        raise ConfigError(f"model.checkpoint: {exc}") from exc


def load_encoder(cfg: RunConfig, channels: tuple[str, ...]) -> torch.nn.Module:
    """The frozen encoder, built once per process for the same model settings."""
    key = (tuple(sorted(vars(cfg.model).items())), channels)
    if key not in _ENCODERS:
        _ENCODERS[key] = build_encoder(cfg.model, list(channels))
    return _ENCODERS[key]
