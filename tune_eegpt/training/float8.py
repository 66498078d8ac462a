"""float8 (e4m3fn) feature values: how they are written, and a fast cast back on a CPU.

e4m3fn has 4 exponent bits, 3 mantissa bits, no infinities and a range of +-448. The
encoder's outputs are layer-normed (|z| < 5 on the synthetic corpus, small and large
encoder alike), far inside that range, so no per-cache scale is used: a scale moves values
but not the 3-bit relative precision, and measured, it left the rounding error unchanged.
Values beyond +-448 are saturated to +-448 (clamped before torch's cast, so the rule does
not depend on the torch version) and counted; NaN is refused, since e4m3fn's NaN would
come back as a number from ``to_float32``.

Reading on a CPU: torch's float8 -> float32 cast is scalar code (~3 ns per value here,
10x the rest of a cached-feature epoch), so ``to_float32`` widens the bits itself. An
e4m3fn bit pattern moved into float16's fields (sign at bit 15, exponent and mantissa at
bits 7-13) is the same number times 2**-8, subnormals included (the two exponent biases
differ by 8); one float16 -> float32 cast and an exact x256 finish it.
"""

from __future__ import annotations

import torch

E4M3 = torch.float8_e4m3fn
E4M3_MAX = 448.0


def to_e4m3(z: torch.Tensor) -> tuple[torch.Tensor, int]:
    """``z`` (any float dtype, CPU) as e4m3fn, saturated at +-448, and the number of values
    that were saturated. Raises ValueError on NaN."""
    z = z.float()
    if torch.isnan(z).any():
        raise ValueError("the encoder's features hold NaN: refusing to store them as float8")
    saturated = int((z.abs() > E4M3_MAX).sum())
    return z.clamp(-E4M3_MAX, E4M3_MAX).to(E4M3), saturated


def to_float32(src: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``out`` (float32, ``src``'s shape) filled with ``src`` cast to float32, exactly."""
    if src.dtype != E4M3 or src.device.type != "cpu":
        return out.copy_(src)
    # int8 -> int16 sign-extends: bits 15 and 14 both become the sign; << 7 puts exponent
    # and mantissa at bits 7-13, and the mask clears bit 14
    bits = src.view(torch.int8).to(torch.int16)
    bits.bitwise_left_shift_(7).bitwise_and_(~0x4000)
    return out.copy_(bits.view(torch.float16)).mul_(256.0)


def as_float32(x: torch.Tensor) -> torch.Tensor:
    """``x.float()``, through ``to_float32`` for float8 on a CPU (torch's cast is slow)."""
    if x.dtype != E4M3 or x.device.type != "cpu":
        return x.float()
    return to_float32(x, out=torch.empty(x.shape, dtype=torch.float32))
