"""Open a complete window cache memory-mapped, and hand its splits to the trainer.

Every process that opens the same cache maps the same shard files, so all trial
processes on a node share one copy of the windows through the page cache.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa

from tune_eegpt.checksum import DamagedFileError, problem
from tune_eegpt.data.build import MANIFEST, ensure_split_file
from tune_eegpt.data.shards import SHARD_SUFFIX, MappedShard, repair_hint
from tune_eegpt.data.splits import SPLIT_NAMES, read_splits
from tune_eegpt.shell_command import module_command

if TYPE_CHECKING:
    import torch


class ShardedWindows:
    """All windows of a cache, (n, C, T), as a list of zero-copy per-shard views.

    ``windows[i]`` and a slice inside one shard are views of the mapped files;
    ``take(rows)`` gathers any rows into a new array."""

    def __init__(self, shards: list[np.ndarray]) -> None:
        self.shards = shards
        self.offsets = np.cumsum([0] + [len(s) for s in shards])  # shard k: offsets[k]:[k+1]
        first = shards[0]
        self.shape = (int(self.offsets[-1]), *first.shape[1:])
        self.dtype = first.dtype
        self.nbytes = sum(s.nbytes for s in shards)

    def __len__(self) -> int:
        return self.shape[0]

    def locate(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Global row numbers -> (shard number, row inside the shard)."""
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= len(self)):
            raise IndexError(f"row out of range for {len(self)} windows")
        shard = np.searchsorted(self.offsets, rows, side="right") - 1
        return shard, rows - self.offsets[shard]

    def __getitem__(self, item: int | slice) -> np.ndarray:
        if isinstance(item, (int, np.integer)):
            shard, row = self.locate(np.array([item % len(self)]))
            return self.shards[shard[0]][row[0]]
        if isinstance(item, slice):
            rows = np.arange(len(self))[item]
            if len(rows) and rows[-1] >= rows[0]:
                shard, local = self.locate(rows[[0, -1]])
                step = item.step or 1
                if shard[0] == shard[1] and step > 0:
                    return self.shards[shard[0]][local[0] : local[1] + 1 : step]
            return self.take(rows)
        return self.take(np.asarray(item))

    def take(self, rows: np.ndarray, dtype: np.dtype | type | None = None) -> np.ndarray:
        """Copies the given rows, in order, into a new (len(rows), C, T) array."""
        shard, local = self.locate(rows)
        out = np.empty((len(shard), *self.shape[1:]), dtype=dtype or self.dtype)
        for k in np.unique(shard):
            mask = shard == k
            out[mask] = self.shards[k][local[mask]]
        return out


class WindowSplit:
    """The rows of one split: a BatchSource for the trainer (x in microvolts, float32)."""

    def __init__(
        self,
        name: str,
        windows: ShardedWindows,
        meta: pd.DataFrame,
        channels: list[str],
        sfreq: float,
    ) -> None:
        self.name = name
        self.rows = meta.index.to_numpy(dtype=np.int64)  # global row numbers in the cache
        self.meta = meta.reset_index(drop=True)
        self.labels = self.meta["label"].to_numpy(dtype=np.float32)
        self.recording_ids = self.meta["recording"].to_numpy()
        self.subject_ids = self.meta["subject"].to_numpy()
        self.channels = list(channels)
        self.sfreq = sfreq
        self._windows = windows

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def window_shape(self) -> tuple[int, int]:
        return self._windows.shape[1], self._windows.shape[2]

    def get_batch(self, indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, C, T) float32 in microvolts, y (B,) float32 0/1 labels."""
        import torch  # only here: the data package hands out tensors, nothing more

        indices = np.asarray(indices, dtype=np.int64)
        x = self._windows.take(self.rows[indices], dtype=np.float32)  # (B, C, T)
        return torch.from_numpy(x), torch.from_numpy(self.labels[indices])


class WindowCache:
    """A complete window cache, opened memory-mapped.

    ``meta``: one row per window (recording, subject, session, token, source_split,
    label, window_index, start_s, split in train/val/test). ``windows``: ShardedWindows.
    ``split(name)``: the trainer's view of train, val or test."""

    def __init__(
        self, path: Path, manifest: dict, shards: list[MappedShard], splits: pd.DataFrame
    ) -> None:
        self.path = path
        self.manifest = manifest
        self._shards = shards  # keeps the memory maps alive as long as the views
        self.windows = ShardedWindows([s.windows for s in shards])
        self.splits = splits
        meta = pa.concat_tables([s.meta_table() for s in shards]).to_pandas()
        meta = meta.rename(columns={"split": "source_split"})
        fold = splits.set_index(["source_split", "subject"])["split"]
        keys = pd.MultiIndex.from_frame(meta[["source_split", "subject"]])
        meta["split"] = fold.reindex(keys).to_numpy()
        assert meta["split"].notna().all(), "every subject has a split"
        self.meta = meta

    @classmethod
    def open(
        cls, path: str | Path, *, split_seed: int | None = None, val_fraction: float | None = None
    ) -> WindowCache:
        """Opens the cache at ``path`` (a ``<out_dir>/<key>`` directory). The split defaults
        to the one the cache was prepared with; another seed or fraction is computed and
        written beside the cache on first use."""
        path = Path(path).expanduser()
        manifest_path = path / MANIFEST
        if not manifest_path.is_file():
            hint = ""
            if path.is_dir() and any((p / MANIFEST).is_file() for p in path.iterdir()):
                hint = "; it holds complete caches in its sub-folders: pass one of those"
            raise FileNotFoundError(
                f"{path} is not a complete window cache (no {MANIFEST}){hint}; build one with "
                f"`{module_command('tune_eegpt.data', 'prepare')}`"
            )
        manifest = json.loads(manifest_path.read_text())
        default = manifest["default_split"]
        seed = default["seed"] if split_seed is None else split_seed
        fraction = default["val_fraction"] if val_fraction is None else val_fraction
        splits = read_splits(ensure_split_file(path, seed, fraction))
        shards = []
        for entry in manifest["shards"]:
            shard = path / "shards" / f"{entry['recording']}{SHARD_SUFFIX}"
            why = problem(shard, entry, full=False)  # the size: cheap, on every open
            if why is None:
                try:
                    shards.append(MappedShard(shard))
                    continue
                except (pa.ArrowInvalid, OSError, ValueError) as exc:
                    why = f"not a readable Arrow file: {exc}"
            raise DamagedFileError(f"{shard}: damaged window shard ({why}); {repair_hint()}")
        return cls(path, manifest, shards, splits)

    @property
    def key(self) -> str:
        """Identity of the windows (settings + source files + schema), not of the split."""
        return self.manifest["key"]

    @property
    def channels(self) -> list[str]:
        return list(self.manifest["settings"]["channels"])

    @property
    def sfreq(self) -> float:
        return float(self.manifest["settings"]["sfreq"])

    def __len__(self) -> int:
        return len(self.windows)

    def split(self, name: str) -> WindowSplit:
        if name not in SPLIT_NAMES:
            raise ValueError(f"unknown split '{name}'; expected one of {SPLIT_NAMES}")
        rows = self.meta[self.meta["split"] == name]
        return WindowSplit(name, self.windows, rows, self.channels, self.sfreq)
