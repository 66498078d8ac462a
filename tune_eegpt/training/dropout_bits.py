"""Dropout(p=0.5) masks from random bits keyed by (seed, epoch, micro-batch) only.

``torch.dropout`` draws one Bernoulli(0.5) per element through torch's generator; on a CPU
that costs more than the rest of a probe step, and its values depend on the generator's
state, so on which device and after what. Here every element takes one bit of a PCG64
stream seeded by (trial seed, epoch, micro-batch): the bits are independent and each is 1
with probability exactly 1/2, so the mask has dropout's distribution (keep with probability
0.5; the kept values are scaled by 2, which the caller folds into its products, exactly,
since x2 is a power of two). The mask of a micro-batch never depends on the device, the
batch of other trials it is trained with, memory, or state carried between steps, so a
trial trained alone, in a pass of many, or resumed draws the same masks.

The bits are drawn on the host (NumPy, ~10 us for 64 rows of 4,096 values) and applied to
the stored float16 (float32, float8) values as integers before the cast to float32: each
value's bit pattern times its 0/1 byte (0 * bits = +0.0; 1 * bits = the value, untouched).
On a CPU the bytes are unpacked by NumPy; on another device the packed bits are copied
there and unpacked by a 256-entry table (``unpack_keep``), which the tests run on a CPU
against NumPy's unpacking.
"""

from __future__ import annotations

import threading
from functools import lru_cache

import numpy as np
import torch

_SALT = 0x5EED_D80F  # keeps these streams apart from any other use of the same seed
# same-width integers: the masking multiply works on bit patterns (float8 has no numpy type)
_INT_OF = {torch.float16: torch.int16, torch.float32: torch.int32, torch.float8_e4m3fn: torch.uint8}
# byte value -> its 8 bits as 8 bytes (little bit order), one int64 per byte value
_UNPACK = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1, bitorder="little")
_UNPACK_TABLE = torch.from_numpy(_UNPACK.copy()).view(torch.int64).view(-1)  # (256,)
_TABLES: dict[torch.device, torch.Tensor] = {}
_LOCAL = threading.local()


def keep_bits(
    seed: int, epoch: int, first_batch: int, rows: int, batch_rows: int, width: int
) -> np.ndarray:
    """(rows, ceil(width / 8)) uint8 for ``rows`` rows of consecutive micro-batches of
    ``batch_rows`` rows, starting at micro-batch ``first_batch`` (the last may be short):
    bit j of byte i of a row keeps element 8 i + j.

    Micro-batch b's bits are words [b W, (b + 1) W) of one PCG64 stream per (seed, epoch),
    W = its slot (batch_rows rows of bits, in 64-bit words); a short micro-batch takes the
    start of its slot. So the bits of a micro-batch are the same whether it is drawn alone
    or with its neighbours (a chunk), and the stream is jumped to, not replayed
    (``PCG64.advance``)."""
    row_bytes = -(-width // 8)
    slot_words = -(-(batch_rows * row_bytes) // 8)
    batches = -(-rows // batch_rows)
    bits = _generator()
    bits.state = _epoch_state(seed, epoch)
    bits.advance(first_batch * slot_words)
    raw = bits.random_raw(batches * slot_words).view(np.uint8).reshape(batches, -1)
    return raw[:, : batch_rows * row_bytes].reshape(-1, row_bytes)[:rows]


@lru_cache(maxsize=64)
def _epoch_state(seed: int, epoch: int) -> dict:
    return np.random.PCG64(np.random.SeedSequence([_SALT, seed % 2**64, epoch])).state


def _generator() -> np.random.PCG64:
    """This thread's bit generator, re-stated for every draw (building one costs ~15 us)."""
    if not hasattr(_LOCAL, "bits"):
        _LOCAL.bits = np.random.PCG64(0)
    return _LOCAL.bits


def unpack_keep(bits: torch.Tensor, width: int) -> torch.Tensor:
    """(rows, width) uint8 0/1 from ``keep_bits``' packed bytes, on ``bits``' device."""
    table = _TABLES.get(bits.device)
    if table is None:
        table = _TABLES[bits.device] = _UNPACK_TABLE.to(bits.device)
    rows, row_bytes = bits.shape
    unpacked = torch.index_select(table, 0, bits.reshape(-1).to(torch.int32))
    return unpacked.view(torch.uint8).view(rows, row_bytes * 8)[:, :width]


def half_dropout_(
    x: torch.Tensor,
    seed: int,
    epoch: int,
    first_batch: int,
    batch_rows: int | None = None,
    host_unpack: bool | None = None,
) -> torch.Tensor:
    """Zeroes each element of ``x`` (rows, width: float16, float32 or float8_e4m3fn),
    independently with probability 1/2, in place, and returns ``x``. ``x`` holds the rows
    of consecutive micro-batches of ``batch_rows`` rows (default: all of them one
    micro-batch) from ``first_batch`` on. No scaling: the caller multiplies by 2.
    ``host_unpack``: unpack with NumPy (default on a CPU)."""
    rows, width = x.shape
    bits = keep_bits(seed, epoch, first_batch, rows, batch_rows or rows, width)
    values = x.view(_INT_OF[x.dtype])
    if host_unpack is None:
        host_unpack = x.device.type == "cpu"
    if host_unpack:
        keep = np.unpackbits(bits, axis=1, count=width, bitorder="little")  # (rows, width) 0/1
        held = values.numpy()
        np.multiply(held, keep, out=held, casting="unsafe")  # no wrap-around: keep is 0 or 1
        return x
    keep = unpack_keep(torch.from_numpy(bits).to(x.device, non_blocking=True), width)
    values.mul_(keep)  # int * 0/1 byte: the bit pattern or +0.0
    return x
