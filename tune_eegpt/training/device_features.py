"""Feature rows resident on the training device, once per device, shared by its trials.

On a GPU the fused probe step (training/fused_probe.py) gathers, drops out and casts rows
on the device when its FeatureRows live there; nothing crosses PCIe during an epoch. This
module decides whether the rows fit, copies them to the device once, and lets several
trainers use one copy:

- within a process (an actor reused for the next trial, or several trainers built in one
  process), ``resident_rows`` keeps one device copy per (rows, device);
- across processes, a holder (trainables/feature_holder.py: one Ray actor per GPU) makes
  the copy and hands out ``export_rows`` handles: CUDA IPC handles for device memory
  (``torch.multiprocessing``'s reduction of a tensor), shared-memory file names for host
  memory (the CPU analogue the tests use). A trial process calls ``import_rows`` and
  ``register_rows``; the trainer then finds the rows by their key.

Why a holder actor and not several trials in one process: Ray Tune runs one trial per
actor, and ASHA, checkpoints, ``reuse_actors`` and fault handling are per trial; a
multi-trial process would have to re-implement them. One holder per GPU keeps the
trial model as it is, and costs one IPC open per trial (milliseconds).

When the rows do not fit (free device memory minus a reserve), the trainer keeps the host
rows and copies each chunk to the device (the path before this one), and says why once per
process through the ``tune_eegpt`` logger.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch
from torch.multiprocessing.reductions import reduce_tensor

from tune_eegpt.training.feature_rows import FeatureRows

log = logging.getLogger("tune_eegpt")

RESERVE_FRACTION = 0.15  # of the device's memory, left to the trials' own work
_COPY_ROWS = 4096  # rows copied to the device at a time (bounded host memory)
_RESIDENT: dict[tuple[str, str], FeatureRows] = {}  # (rows key, device) -> rows on it
_REGISTERED: dict[tuple[str, str], FeatureRows] = {}  # imported from a holder
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
        "GiB kept in reserve; rows are gathered on the host and copied per chunk instead"
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
    """The rows to train from on ``device``: registered shared rows, this process's
    earlier copy, a new device copy if it fits, else ``rows`` unchanged (reason logged)."""
    key = (rows_key(rows), str(device))
    for found in (_REGISTERED.get(key), _RESIDENT.get(key)):
        if found is not None:
            return found
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


# ---- sharing between processes -----------------------------------------------------------
def export_rows(rows: FeatureRows, key: str) -> dict[str, Any]:
    """A picklable description of rows that another process can open without a copy:
    CUDA tensors travel as IPC handles, host tensors must be in shared memory
    (``share_memory_()``) and travel as its handles. ``key``: the ``rows_key`` of the
    rows they were copied from, under which the importer registers them."""
    return {
        "key": key,
        "tensors": {
            name: reduce_tensor(getattr(rows, name)) for name in ("table", "index", "labels")
        },
        "dtype": str(rows.dtype).removeprefix("torch."),
        "feature_shape": list(rows.feature_shape),
        "source": rows.source,
    }


def import_rows(exported: dict[str, Any]) -> FeatureRows:
    """Opens rows exported by ``export_rows`` in another process (the same memory)."""
    tensors = {name: rebuild(*args) for name, (rebuild, args) in exported["tensors"].items()}
    return FeatureRows(
        tensors["table"],
        tensors["index"],
        tensors["labels"],
        getattr(torch, exported["dtype"]),
        tuple(exported["feature_shape"]),
        exported["source"],
    )


def register_rows(rows: FeatureRows, key: str) -> None:
    """Makes ``rows`` (imported) the ones ``resident_rows`` returns on their device for
    the rows whose ``rows_key`` is ``key``."""
    _REGISTERED[(key, str(rows.table.device))] = rows
