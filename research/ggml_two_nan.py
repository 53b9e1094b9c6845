"""Which NaN an operation on two NaNs returns, as numpy computes ggml values (FORMAT.md §7.6).

    python -m research.ggml_two_nan

IEEE 754 leaves it open; x86's SSE/AVX instructions return their first source operand,
but which operand numpy passes first depends on the loop it picks (array × array,
array × broadcast scalar, vector body or scalar tail of one loop, the block count). This
prints, for float32 arrays A, B of n NaNs (A's all 0x7FC00AAA, B's all 0xFFC00555) and for
llmc's Q4_1 dequantizer (``d · q + m`` with ``d`` and ``m`` both NaN), the result's bits:
when they differ between lines, not even one implementation is consistent, which is why
a writer records no ``digest.decoded`` for a quantized tensor with a NaN (§7.6 digest rule).
"""

from __future__ import annotations

import platform
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from llmc_format.codecs.ggml_types import TYPES, dequantize

NAN_A = np.uint32(0x7FC00AAA).view(np.float32)  # positive, payload 0xAAA
NAN_B = np.uint32(0xFFC00555).view(np.float32)  # negative, payload 0x555


def _bits(x: np.ndarray) -> str:
    return " ".join(sorted({f"{v:08x}" for v in np.asarray(x, np.float32).reshape(-1).view(np.uint32)}))


def main() -> None:
    print(f"numpy {np.__version__}, {platform.machine()}, {platform.python_implementation()}")
    print(f"A = {_bits(np.array([NAN_A]))}, B = {_bits(np.array([NAN_B]))}")
    with np.errstate(all="ignore"):
        for n in (8, 17, 1000):
            a, b = np.full(n, NAN_A, np.float32), np.full(n, NAN_B, np.float32)
            print(f"n = {n:4d}: A * B -> {_bits(a * b)}; A * B[0] (array x scalar) -> "
                  f"{_bits(a * b[0])}; A + B -> {_bits(a + b)}")
    block = np.zeros((1, 20), np.uint8)
    block[0, 0:2] = np.array([0x7E2A], "<u2").view(np.uint8)  # d: +NaN, payload 0x22A
    block[0, 2:4] = np.array([0xFD55], "<u2").view(np.uint8)  # m: -NaN, payload 0x155
    block[0, 4:20] = 0x21
    t = TYPES["Q4_1"]
    for n in (1, 2, 3, 16):
        v = dequantize(np.repeat(block, n, axis=0), t, (n, 32))[0]
        print(f"Q4_1 d=7e2a m=fd55, block 0 of a tensor of {n:2d} block(s): {_bits(v)}")


if __name__ == "__main__":
    main()
