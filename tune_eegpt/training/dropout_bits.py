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

The bits are drawn on the host (NumPy, ~28 us for 64 rows of 4,096 values) and applied to
the stored float16 (float32, float8) values as integers before the cast to float32: each
value's bit pattern times its 0/1 byte (0 * bits = +0.0; 1 * bits = the value, untouched).
On a CPU the bytes are unpacked by NumPy; on another device the packed bits are copied
there and unpacked by a 256-entry table (``unpack_keep``), which the tests run on a CPU
against NumPy's unpacking.
"""

from __future__ import annotations

import numpy as np
import torch

_SALT = 0x5EED_D80F  # keeps these streams apart from any other use of the same seed
# same-width integers: the masking multiply works on bit patterns (float8 has no numpy type)
_INT_OF = {torch.float16: torch.int16, torch.float32: torch.int32, torch.float8_e4m3fn: torch.uint8}
# byte value -> its 8 bits as 8 bytes (little bit order), one int64 per byte value
_UNPACK = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1, bitorder="little")
_UNPACK_TABLE = torch.from_numpy(_UNPACK.copy()).view(torch.int64).view(-1)  # (256,)
_TABLES: dict[torch.device, torch.Tensor] = {}


def keep_bits(seed: int, epoch: int, micro_batch: int, rows: int, width: int) -> np.ndarray:
    """(rows, ceil(width / 8)) uint8: bit j of byte i of a row keeps element 8 i + j."""
    row_bytes = -(-width // 8)
    words = -(-(rows * row_bytes) // 8)
    key = [_SALT, seed % 2**64, epoch, micro_batch]
    raw = np.random.PCG64(np.random.SeedSequence(key)).random_raw(words).view(np.uint8)
    return raw[: rows * row_bytes].reshape(rows, row_bytes)


def unpack_keep(bits: torch.Tensor, width: int) -> torch.Tensor:
    """(rows, width) uint8 0/1 from ``keep_bits``' packed bytes, on ``bits``' device."""
    table = _TABLES.get(bits.device)
    if table is None:
        table = _TABLES[bits.device] = _UNPACK_TABLE.to(bits.device)
    rows, row_bytes = bits.shape
    unpacked = torch.index_select(table, 0, bits.reshape(-1).to(torch.int32))
    return unpacked.view(torch.uint8).view(rows, row_bytes * 8)[:, :width]


def half_dropout_(
    x: torch.Tensor, seed: int, epoch: int, micro_batch: int, host_unpack: bool | None = None
) -> torch.Tensor:
    """Zeroes each element of ``x`` (rows, width: float16, float32 or float8_e4m3fn),
    independently with probability 1/2, in place, and returns ``x``. No scaling: the
    caller multiplies by 2. ``host_unpack``: unpack with NumPy (default on a CPU)."""
    rows, width = x.shape
    bits = keep_bits(seed, epoch, micro_batch, rows, width)
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
