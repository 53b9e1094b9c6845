"""The last two steps of every decoding that computes in binary32: clamp, then convert.

``affine``, ``blockdct`` and ``diagscale`` all compute a tensor's values as IEEE binary32
and end the same way (spec/FORMAT.md §7.2 steps 4–5): clamp to the tensor dtype's
largest finite value, so an overflow (a hostile file, or a value at the edge of the
dtype's range) gives a finite, deterministic result instead of inf; then round to the
dtype, nearest-even. One function, so every stage applies the one rule.
"""

from __future__ import annotations

import numpy as np

from llmc_format import dtypes

#: Tensor dtypes whose values a binary32 decoding produces.
FLOAT_DTYPES = frozenset({"float16", "bfloat16", "float32", "float64"})

_F32_MAX = float(np.finfo(np.float32).max)
#: the clamp bound M of each dtype, as a float32 (float64 too is decoded through binary32)
CLAMP: dict[str, np.float32] = {
    "float16": np.float32(np.finfo(np.float16).max),
    "bfloat16": np.float32(float.fromhex("0x1.fep127")),  # largest finite bfloat16
    "float32": np.float32(_F32_MAX),
    "float64": np.float32(_F32_MAX),
}


def clamp_convert(v: np.ndarray, dtype: str) -> np.ndarray:
    """Steps 4–5 of §7.2, **in place** on the float32 array ``v``: ``min(max(v, −M), M)``
    with ``M = CLAMP[dtype]``, then ``v`` rounded to ``dtype`` (nearest-even; subnormals
    kept). For float32 the result is ``v`` itself (no copy). NaN stays NaN."""
    np.clip(v, -CLAMP[dtype], CLAMP[dtype], out=v)
    return v.astype(dtypes.to_numpy(dtype), copy=False)
