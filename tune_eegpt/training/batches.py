"""What the trainer reads: anything with a length that hands out batches by index.

The trainer draws its own seeded permutation each epoch and asks the data for the rows
of each micro-batch, so the order of the data (and so a resumed run) depends only on
the sampler seed and the epoch, never on a DataLoader's worker state.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
import torch


@runtime_checkable
class BatchSource(Protocol):
    """A split of windows or features. ``get_batch`` returns ``(x, y)``:
    ``x`` float32, float16 or float8_e4m3fn of shape (B, ...) (the trainer casts it to
    float32 once it is on its device) and ``y`` float32 of shape (B,) holding 0/1 labels.
    Optional attribute ``recording_ids``: one id per row, for recording-level metrics."""

    def __len__(self) -> int: ...

    def get_batch(self, indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]: ...


class TensorBatches:
    """In-memory rows: the simplest BatchSource (tests, small corpora)."""

    def __init__(
        self, x: torch.Tensor, y: torch.Tensor, recording_ids: np.ndarray | None = None
    ) -> None:
        if len(x) != len(y):
            raise ValueError(f"x has {len(x)} rows but y has {len(y)}")
        self.x = x
        self.y = y.float()
        self.recording_ids = recording_ids

    def __len__(self) -> int:
        return len(self.x)

    def get_batch(self, indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.as_tensor(indices, dtype=torch.long)
        return self.x[idx].float(), self.y[idx]


class RowSubset:
    """The rows ``rows`` of another BatchSource, renumbered from 0 (a split of a cache)."""

    def __init__(self, source: BatchSource, rows: np.ndarray) -> None:
        self.source = source
        self.rows = np.asarray(rows, dtype=np.int64)
        ids = getattr(source, "recording_ids", None)
        self.recording_ids = None if ids is None else np.asarray(ids)[self.rows]

    def __len__(self) -> int:
        return len(self.rows)

    def get_batch(self, indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return self.source.get_batch(self.rows[np.asarray(indices, dtype=np.int64)])
