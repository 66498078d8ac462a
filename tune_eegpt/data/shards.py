"""Arrow IPC shards: one file per recording, windows as a FixedSizeList column.

A shard holds one record batch, so its windows are one contiguous buffer that numpy can
view in place once the file is memory-mapped. Shape, channels and the recording's
statistics travel in the schema metadata.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc

from tune_eegpt.atomic_write import TEMP_MARK as TEMP_MARK  # where the cache builder looks
from tune_eegpt.atomic_write import atomic_path, atomic_write_bytes
from tune_eegpt.data.preprocess import RecordingWindows
from tune_eegpt.shell_command import module_command

SHARD_SUFFIX = ".arrow"
REJECTION_SUFFIX = ".rejected.json"
METADATA_KEY = b"tune_eegpt"


def repair_hint(out: str | None = None) -> str:
    """How to repair a cache whose shards are damaged or missing: prepare it again."""
    where = ("--out", out) if out else ()
    command = module_command("tune_eegpt.data", "prepare", *where)
    flags = "--data-root" if out else "--data-root and --out"
    return f"run `{command}` again with the same {flags}: it decodes only the damaged recordings"


META_COLUMNS = {
    "recording": pa.string(),
    "subject": pa.string(),
    "session": pa.int16(),
    "token": pa.int16(),
    "split": pa.string(),  # the source folder: train | eval
    "label": pa.int8(),
    "window_index": pa.int32(),
    "start_s": pa.float64(),
}


def atomic_write_json(final: Path, obj: object) -> None:
    atomic_write_bytes(final, (json.dumps(obj, indent=2, default=str) + "\n").encode())


def write_shard(final: Path, result: RecordingWindows, row: dict, stats: dict) -> None:
    """Writes a recording's windows and per-window metadata to ``final``, atomically."""
    n, n_channels, n_times = result.windows.shape
    flat = pa.array(result.windows.reshape(-1), type=pa.from_numpy_dtype(result.windows.dtype))
    windows = pa.FixedSizeListArray.from_arrays(flat, n_channels * n_times)
    columns = {
        "windows": windows,
        "recording": pa.array([row["recording"]] * n, pa.string()),
        "subject": pa.array([row["subject"]] * n, pa.string()),
        "session": pa.array(np.full(n, row["session"], np.int16)),
        "token": pa.array(np.full(n, row["token"], np.int16)),
        "split": pa.array([row["split"]] * n, pa.string()),
        "label": pa.array(np.full(n, row["label"], np.int8)),
        "window_index": pa.array(result.window_index.astype(np.int32)),
        "start_s": pa.array(result.start_s.astype(np.float64)),
    }
    metadata = {**stats, "shape": [n, n_channels, n_times], "dtype": str(result.windows.dtype)}
    batch = pa.record_batch(list(columns.values()), names=list(columns))
    batch = batch.replace_schema_metadata({METADATA_KEY: json.dumps(metadata)})
    with atomic_path(final) as tmp:
        with pa.OSFile(str(tmp), "wb") as sink, ipc.new_file(sink, batch.schema) as writer:
            writer.write_batch(batch)


class MappedShard:
    """A shard opened memory-mapped: ``windows`` is a read-only (n, C, T) numpy view of
    the mapped file (no copy), ``table`` the whole record batch as an Arrow table."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.source = pa.memory_map(str(self.path), "r")
        self.table = ipc.open_file(self.source).read_all()
        raw_meta = (self.table.schema.metadata or {}).get(METADATA_KEY)
        if raw_meta is None:
            raise ValueError(f"{self.path} is not a tune-eegpt window shard (no metadata)")
        self.metadata: dict = json.loads(raw_meta)
        n, n_channels, n_times = self.metadata["shape"]
        column = self.table.column("windows")
        assert column.num_chunks == 1, "a shard holds one record batch"
        values = column.chunk(0).values  # the flat (n*C*T,) child array
        dtype = np.dtype(self.metadata["dtype"])
        self.windows = np.frombuffer(
            values.buffers()[1],
            dtype=dtype,
            count=n * n_channels * n_times,
            offset=values.offset * dtype.itemsize,
        ).reshape(n, n_channels, n_times)

    def __len__(self) -> int:
        return len(self.windows)

    def meta_table(self) -> pa.Table:
        return self.table.drop_columns(["windows"])


def read_shard_stats(path: str | Path) -> dict:
    """The schema metadata of a shard, without mapping its windows."""
    with pa.memory_map(str(path), "r") as source:
        schema = ipc.open_file(source).schema
    return json.loads(schema.metadata[METADATA_KEY])
