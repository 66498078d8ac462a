"""Dropout(p=0.5) masks from random bits, keyed by (seed, epoch, chunk).

``torch.dropout`` draws one Bernoulli(0.5) per element through torch's generator, and on a
CPU that costs more than everything else in a probe epoch. Here every element takes one
bit of a PCG64 stream instead: the bits are independent and each is 1 with probability
exactly 1/2, so the mask has the same distribution (keep with probability 0.5; the kept
values are scaled by 2, which the caller folds into its matmuls, exactly, since x2 is a
power of two). The values differ from torch's stream, so a run is not bit-identical to
one on the generic path; within this path it is, and a resumed run too: the bits of a
chunk of micro-batches depend only on (seed, epoch, chunk), never on state carried
between steps.

On CPU the mask is applied to the stored float16 (float32, float8) values as integers: the
random bytes are unpacked to one 0/1 byte per element, and an integer multiply of each
value's bit pattern by its byte (0 * bits = 0, the float +0.0; 1 * bits = the value,
untouched) zeroes the dropped elements in one pass before the cast to float32. On CUDA
the mask is one byte per element from ``bernoulli_(0.5)`` on a generator seeded from the
same key.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

_SALT = 0x5EED_D80F  # keeps these streams apart from any other use of the same seed
_GOLDEN, _MASK64 = 0x9E3779B97F4A7C15, 2**64 - 1
# same-width integers: the masking multiply works on bit patterns (float8 has no numpy type)
_INT_OF = {torch.float16: torch.int16, torch.float32: torch.int32, torch.float8_e4m3fn: torch.uint8}


def stream_key(seed: int, epoch: int, chunk: int) -> list[int]:
    return [_SALT, seed % 2**64, epoch, chunk]


def half_dropout_(x: torch.Tensor, seed: int, epoch: int, chunk: int) -> torch.Tensor:
    """Zeroes each element of ``x`` (rows, width), float16, float32 or float8_e4m3fn,
    independently with probability 1/2, in place, and returns ``x``. No scaling: the caller
    multiplies by 2."""
    if x.device.type != "cpu":
        return _half_dropout_device_(x, seed, epoch, chunk)
    rows, width = x.shape
    row_bytes = -(-width // 8)
    words = -(-(rows * row_bytes) // 8)
    bits = np.random.PCG64(np.random.SeedSequence(stream_key(seed, epoch, chunk)))
    raw = bits.random_raw(words).view(np.uint8)[: rows * row_bytes].reshape(rows, row_bytes)
    keep = np.unpackbits(raw, axis=1, count=width, bitorder="little")  # (rows, width) 0/1
    values = x.view(_INT_OF[x.dtype]).numpy()
    np.multiply(values, keep, out=values, casting="unsafe")  # no wrap-around: keep is 0 or 1
    return x


def device_seed(seed: int, epoch: int, chunk: int) -> int:
    """The seed of a device generator for the chunk's mask (``half_dropout_device_``):
    SplitMix64 of the chunk number from a per-epoch key, ~1 us (a SeedSequence per chunk
    took ~11, once per micro-batch on a GPU)."""
    z = (_epoch_key(seed, epoch) + (chunk + 1) * _GOLDEN) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return (z ^ (z >> 31)) >> 1  # torch seeds are taken below 2**63


@lru_cache(maxsize=16)
def _epoch_key(seed: int, epoch: int) -> int:
    key = np.random.SeedSequence([_SALT, seed % 2**64, epoch]).generate_state(1, np.uint64)
    return int(key[0])


def half_dropout_device_(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """``half_dropout_`` on a device, drawing from ``generator`` (seeded with
    ``device_seed``): a CUDA graph that captured this call draws the same values on each
    replay from whatever seed the generator holds then."""
    # one byte per element drawn as Bernoulli(1/2) by torch: a quarter of the memory
    # traffic of float32 uniforms compared with 0.5 (the mask is most of a micro-batch's
    # traffic on a GPU after the rows themselves)
    keep = torch.empty(x.shape, dtype=torch.uint8, device=x.device)
    keep.bernoulli_(0.5, generator=generator)
    if x.dtype == torch.float8_e4m3fn:  # no float8 multiply: the bits, as in the CPU branch
        x.view(torch.uint8).mul_(keep)
        return x
    return x.mul_(keep)


def _half_dropout_device_(x: torch.Tensor, seed: int, epoch: int, chunk: int) -> torch.Tensor:
    generator = torch.Generator(device=x.device).manual_seed(device_seed(seed, epoch, chunk))
    return half_dropout_device_(x, generator)
