"""Round-to-nearest baseline: asymmetric min-max with groups of ``g`` at ``b`` bits.

Why it exists: benchmarks compare the video-codec pipeline against the simplest
quantizer people actually ship (llama.cpp's Q4_1 is this with g = 32). It never writes a
file; it returns the reconstruction and its honest size: ``b`` bits per code plus an
float16 scale and an float16 minimum per group, i.e. b + 32/g bits per weight when the
row length is a multiple of g (exactly counted otherwise: the last group of a row may be
short).

Same layout as the affine stage (``grid.py``): rows = first axis, groups run along the
flattened remaining axes; 0-d and 1-D tensors are one row. Codes are computed with the
rounded float16 parameters, which are rounded outward so every group stays on its grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from llmc_format.errors import CodecError
from llmc_format.quant.affine import dequantize, quantize
from llmc_format.quant.grid import Grid, window

#: float16 scale + float16 minimum per group
PARAM_BITS_PER_GROUP = 32


@dataclass(frozen=True)
class RtnResult:
    """Reconstruction and size of a round-to-nearest quantization."""

    dequantized: np.ndarray  #: float32, same shape as the input
    bits_per_weight: float  #: all-in: codes + per-group float16 scale and minimum
    bits: int
    group_size: int


def rtn_quantize(x: np.ndarray, bits: int = 4, group_size: int = 128, name: str = "") -> RtnResult:
    """Quantize ``x`` (finite floats) to ``bits`` bits per weight in groups of ``group_size``."""
    if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 8:
        raise CodecError(f"rtn: bits must be an integer in [1, 8], got {bits!r}")
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
        raise CodecError(f"rtn: group_size must be a positive integer, got {group_size!r}")
    x = np.asarray(x)
    if x.dtype.kind != "f" and x.dtype.name != "bfloat16":
        raise CodecError(f"tensor {name!r}: rtn takes a float array, got {x.dtype}")
    x32 = x.astype(np.float32)
    qz = quantize(
        x32, bits=bits, granularity="group", group_size=group_size, param_dtype="float16", name=name
    )
    grid = Grid.of(x32.shape, "group", group_size)
    win = window(x32.shape, None)
    deq = dequantize(qz.codes.reshape(grid.rows, grid.cols), qz.params, grid, win, "float32")
    n = x32.size
    bpw = (n * bits + grid.n_cells * PARAM_BITS_PER_GROUP) / n if n else 0.0
    return RtnResult(deq.reshape(x32.shape), bpw, bits, group_size)
