"""Feature rows resident on the training device, once per process and device.

On a GPU the packed engine (training/engines/packed.py) gathers, drops out and casts rows
on the device when its FeatureRows live there; nothing crosses PCIe during an epoch. This
module decides whether the rows fit, copies them to the device once, and lets every
trainer of the process (the per-device worker's trials) use that one copy. When the rows
do not fit (free device memory minus a reserve), the trainer keeps the host rows and
copies each micro-batch to the device, and says why once per process through the
``tune_eegpt`` logger, with the numbers.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import replace

import torch

from tune_eegpt.training.feature_rows import FeatureRows

log = logging.getLogger("tune_eegpt")

RESERVE_FRACTION = 0.15  # of the device's memory, left to the trials' own work
_COPY_ROWS = 4096  # rows copied to the device at a time (bounded host memory)
_RESIDENT: dict[tuple[str, str], FeatureRows] = {}  # (rows key, device) -> rows on it
_SAID: set[str] = set()


def rows_key(rows: FeatureRows) -> str:
    """Identity of a split's rows: their source (file path or tensor) and row selection."""
    digest = hashlib.sha256(rows.source.encode())
    digest.update(rows.index.cpu().numpy().tobytes())
    return digest.hexdigest()[:20]


def rows_nbytes(rows: FeatureRows) -> int:
    return len(rows) * rows.width * torch.empty(0, dtype=rows.dtype).element_size()


def fits_on_device(
    nbytes: int, free_bytes: int, total_bytes: int, reserve_fraction: float = RESERVE_FRACTION
) -> tuple[bool, str]:
    """Whether ``nbytes`` of features fit a device with ``free_bytes`` free, keeping
    ``reserve_fraction`` of ``total_bytes`` for everything else; and the reason in words."""
    room = free_bytes - int(reserve_fraction * total_bytes)
    gib = 2**30
    if nbytes <= room:
        return True, f"train features ({nbytes / gib:.2f} GiB) resident on the device"
    return False, (
        f"train features ({nbytes / gib:.2f} GiB) do not fit the device: "
        f"{free_bytes / gib:.2f} GiB free, {reserve_fraction:.0%} of {total_bytes / gib:.2f} "
        "GiB kept in reserve; rows are gathered on the host and copied per micro-batch instead"
    )


def say_once(message: str) -> None:
    if message not in _SAID:
        _SAID.add(message)
        log.warning(message)


def copy_rows_to(rows: FeatureRows, device: torch.device) -> FeatureRows:
    """The rows as one contiguous (n, row_bytes) table on ``device``, copied in chunks."""
    row_bytes = rows_nbytes(rows) // max(len(rows), 1)
    table = torch.empty(len(rows), row_bytes, dtype=torch.uint8, device=device)
    for start in range(0, len(rows), _COPY_ROWS):
        part = torch.arange(start, min(start + _COPY_ROWS, len(rows)))
        table[start : start + len(part)].copy_(rows.gather(part).view(torch.uint8))
    return replace(
        rows,
        table=table,
        index=torch.arange(len(rows), device=device),
        labels=rows.labels.to(device),
    )


def resident_rows(
    rows: FeatureRows,
    device: torch.device,
    memory_info: Callable[[torch.device], tuple[int, int]] | None = None,
) -> FeatureRows:
    """The rows to train from on ``device``: this process's earlier copy, a new device
    copy if it fits, else ``rows`` unchanged (reason logged once)."""
    key = (rows_key(rows), str(device))
    if key in _RESIDENT:
        return _RESIDENT[key]
    if device.type == "cpu" or same_device(rows.table.device, device):
        return rows
    free, total = (memory_info or _cuda_memory)(device)
    fits, reason = fits_on_device(rows_nbytes(rows), free, total)
    say_once(reason)
    if not fits:
        return rows
    _RESIDENT[key] = copy_rows_to(rows, device)
    return _RESIDENT[key]


def same_device(a: torch.device, b: torch.device) -> bool:
    if a.type != b.type:
        return False
    if a.type != "cuda" or a.index == b.index:
        return True
    current = torch.cuda.current_device()
    return (a.index if a.index is not None else current) == (
        b.index if b.index is not None else current
    )


def _cuda_memory(device: torch.device) -> tuple[int, int]:
    return torch.cuda.mem_get_info(device)
