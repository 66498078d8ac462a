"""Feature rows as one gatherable table, for the trainer's fast path.

A ``FeatureBatches`` file is an Arrow IPC file of many record batches, so its rows sit in
many buffers of one memory map. ``feature_rows`` maps every row of a split to its byte
offset in that map and gathers a micro-batch with a single ``index_select`` over an
overlapping strided view of the whole file (row ``i`` of the view starts at byte ``i``),
instead of a Python loop over the file's chunks. The map is the page cache's copy, shared
by every trial process on the machine; nothing is copied at setup.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch

from tune_eegpt.training.batches import BatchSource, RowSubset, TensorBatches
from tune_eegpt.training.features import FeatureBatches

_ELEMENT_DTYPES = (torch.float16, torch.float32, torch.float8_e4m3fn)


@dataclass(frozen=True)
class FeatureRows:
    """A split's rows, also usable as a BatchSource. ``table`` (M, row_bytes) uint8,
    possibly an overlapping strided view; ``index`` (n,) the table row of each row of the
    split; ``labels`` (n,) float32; rows hold ``width`` values of ``dtype`` (float16,
    float32 or float8_e4m3fn: gathered as bytes, whatever the dtype), the flattening
    of ``feature_shape``; ``source`` names where the table came from (a file path), for
    ``device_features.rows_key``."""

    table: torch.Tensor
    index: torch.Tensor
    labels: torch.Tensor
    dtype: torch.dtype
    feature_shape: tuple[int, ...]
    source: str = ""

    @property
    def width(self) -> int:
        return int(np.prod(self.feature_shape))

    def __len__(self) -> int:
        return len(self.index)

    def gather(self, rows: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """The split's rows ``rows`` (int64) as a contiguous (len, width) tensor: ``out``
        (contiguous, of ``dtype``) when given, else a fresh one."""
        if out is None:
            out = torch.empty(len(rows), self.width, dtype=self.dtype, device=self.table.device)
        raw = out.view(torch.uint8)  # (len, row_bytes)
        torch.index_select(self.table, 0, self.index[rows], out=raw)
        return out

    def get_batch(self, indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """As a BatchSource: rows (B, *feature_shape) in the stored dtype, labels (B,)."""
        rows = torch.as_tensor(np.asarray(indices, dtype=np.int64), device=self.index.device)
        return self.gather(rows).view(len(rows), *self.feature_shape), self.labels[rows]

    def subset(self, rows: np.ndarray) -> FeatureRows:
        rows_t = torch.from_numpy(np.asarray(rows, dtype=np.int64))
        rows_t = rows_t.to(self.index.device)
        return FeatureRows(
            self.table,
            self.index[rows_t],
            self.labels[rows_t],
            self.dtype,
            self.feature_shape,
            self.source,
        )


def feature_rows(source: BatchSource) -> FeatureRows | None:
    """The rows of ``source`` as a FeatureRows, or None when it is not made of stored
    feature rows (windows for a live encoder, or a BatchSource this module does not know)."""
    if isinstance(source, FeatureRows):
        return source
    if isinstance(source, RowSubset):
        inner = feature_rows(source.source)
        return None if inner is None else inner.subset(source.rows)
    if isinstance(source, FeatureBatches):
        return _file_rows(source)
    if isinstance(source, TensorBatches) and source.x.dtype in _ELEMENT_DTYPES:
        x = source.x.contiguous()
        table = x.reshape(len(x), -1).view(torch.uint8)
        name = f"tensor:{x.data_ptr():x}:{tuple(x.shape)}"
        return FeatureRows(table, torch.arange(len(x)), source.y, x.dtype, tuple(x.shape[1:]), name)
    return None


def _file_rows(features: FeatureBatches) -> FeatureRows:
    # Opened again here (same pages of the page cache) to have the map's base address.
    mapped = pa.memory_map(str(features.path), "r")
    table = pa.ipc.open_file(mapped).read_all()
    mapped.seek(0)
    whole = mapped.read_buffer(mapped.size())  # zero-copy: the whole file
    column = table.column("features")
    dtype = features.dtype  # FeatureBatches.open checked it against the stored values
    item = dtype.itemsize
    row_bytes = column.type.list_size * item
    offsets = []
    for chunk in column.chunks:
        values = chunk.flatten()  # this chunk's floats: a buffer and an element offset
        start = values.buffers()[1].address - whole.address + values.offset * item
        offsets.append(start + np.arange(len(chunk), dtype=np.int64) * row_bytes)
    with warnings.catch_warnings():  # read-only memory: torch warns, and we never write
        warnings.simplefilter("ignore", UserWarning)
        flat = torch.from_numpy(np.frombuffer(whole, dtype=np.uint8))
    strided = flat.as_strided((len(flat) - row_bytes + 1, row_bytes), (1, 1))
    index = torch.from_numpy(np.concatenate(offsets).astype(np.int64))
    return FeatureRows(
        strided, index, features.labels, dtype, features.feature_shape, str(features.path)
    )
