"""Property tests of the affine stage: round trips, error bound, rows, and a stranger's reader."""

from __future__ import annotations

import math
import struct

import hypothesis.extra.numpy as hnp
import ml_dtypes
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from llmc_format.codecs.base import ArraySpec
from llmc_format.codecs.registry import get_codec
from llmc_format.quant.affine import AffineCodec, AffineParams
from llmc_format.quant.grid import matrix_shape

NP_DTYPES = {
    "float16": np.dtype(np.float16),
    "bfloat16": np.dtype(ml_dtypes.bfloat16),
    "float32": np.dtype(np.float32),
    "float64": np.dtype(np.float64),
}
#: explicit mantissa bits and smallest positive value of each dtype, for rounding tolerances
MANTISSA = {"float16": 10, "bfloat16": 7, "float32": 23, "float64": 52}
TINY = {"float16": 2.0**-24, "bfloat16": 2.0**-133, "float32": 2.0**-149, "float64": 0.0}


@st.composite
def tensors(draw: st.DrawFn) -> tuple[np.ndarray, str]:
    """Small finite tensors of every rank 0..3 (incl. empty), dtype and magnitude."""
    ndim = draw(st.integers(0, 3))
    if ndim == 0:
        shape: tuple[int, ...] = ()
    elif ndim == 1:
        shape = (draw(st.integers(0, 40)),)
    else:
        shape = tuple(draw(st.integers(0, 6)) for _ in range(ndim))
    dtype = draw(st.sampled_from(sorted(NP_DTYPES)))
    magnitude = 10.0 ** draw(st.integers(-8, 3))
    unit = draw(hnp.arrays(np.float64, shape, elements=st.floats(-1.0, 1.0, width=32)))
    return (unit * magnitude).astype(NP_DTYPES[dtype]), dtype


codec_configs = st.fixed_dictionaries(
    {
        "bits": st.integers(1, 16),
        "granularity": st.sampled_from(["row", "group", "tensor"]),
        "group_size": st.integers(1, 9),
        "param_dtype": st.sampled_from(["auto", "float16", "bfloat16", "float32"]),
    }
)


def encode(x: np.ndarray, dtype: str, config: dict) -> tuple[AffineCodec, ArraySpec, object]:
    codec = AffineCodec(**config)
    spec = ArraySpec(dtype, tuple(x.shape), "t")
    enc = codec.encode(x, spec)
    stored = get_codec(enc.config)  # decode from the stored config, as a reader would
    assert isinstance(stored, AffineCodec)
    return stored, spec, enc


def cell_params(codec: AffineCodec, spec: ArraySpec, blob: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Per-element (scale, offset) in float64, shaped like the codes matrix."""
    grid = codec.grid(spec)
    params = AffineParams.from_bytes(blob, grid, codec.params["param_dtype"], spec.name)
    rows, cols = matrix_shape(spec.shape)
    r = np.arange(rows)[:, None] if grid.granularity != "tensor" else np.zeros((rows, 1), int)
    c = np.arange(cols)[None, :] // codec.params["group_size"]
    if grid.granularity != "group":
        c = np.zeros_like(c)
    s = params.scale.astype(np.float64)[r, c] if rows and cols else np.zeros((rows, cols))
    o = params.offset.astype(np.float64)[r, c] if rows and cols else np.zeros((rows, cols))
    return s, o


@settings(max_examples=150, deadline=None)
@given(tensors(), codec_configs)
def test_round_trip_within_half_step(tx: tuple[np.ndarray, str], config: dict) -> None:
    x, dtype = tx
    codec, spec, enc = encode(x, dtype, config)
    levels = 2 ** config["bits"]
    assert enc.array.dtype == np.uint16 and enc.array.shape == x.shape
    assert enc.array.size == 0 or int(enc.array.max()) < levels
    assert codec.resolve(spec) == ArraySpec("uint16", spec.shape, "t")
    y = codec.decode(enc.array, lambda i: enc.blobs[i], len(enc.blobs), spec)
    assert y.dtype == x.dtype and y.shape == x.shape

    rows, cols = matrix_shape(x.shape)
    s, o = cell_params(codec, spec, enc.blobs[0])
    x64 = x.astype(np.float64).reshape(rows, cols)
    y64 = y.astype(np.float64).reshape(rows, cols)
    q = enc.array.astype(np.float64).reshape(rows, cols)
    assert np.isfinite(y64).all()
    # |x − deq| ≤ s/2, plus the float32 arithmetic of steps 2–3 and the dtype rounding of step 5
    tol = (
        s / 2 * (1 + 1e-9)
        + 2.0**-22 * (q * s + np.abs(o) + np.abs(x64))
        + 2.0 ** -MANTISSA[dtype] * (np.abs(x64) + s)
        + TINY[dtype]
    )
    assert (np.abs(x64 - y64) <= tol).all(), float(np.max(np.abs(x64 - y64) - tol))


@settings(max_examples=100, deadline=None)
@given(tensors(), codec_configs, st.data())
def test_rows_decode_equals_full_decode_sliced(
    tx: tuple[np.ndarray, str], config: dict, data: st.DataObject
) -> None:
    x, dtype = tx
    if x.ndim == 0:
        return
    codec, spec, enc = encode(x, dtype, config)
    fetch = lambda i: enc.blobs[i]  # noqa: E731
    full = codec.decode(enc.array, fetch, 1, spec)
    a = data.draw(st.integers(0, x.shape[0]))
    b = data.draw(st.integers(a, x.shape[0]))
    part = codec.decode(enc.array[a:b], fetch, 1, spec, rows=(a, b))
    assert part.dtype == full.dtype and part.shape == full[a:b].shape
    assert part.tobytes() == full[a:b].tobytes()


# --------------------------------------------------------------------------- stranger's reader


def _widen(raw: bytes, dtype: str) -> list[float]:
    """Step 1 from the spec alone: stored params -> Python floats holding float32 values."""
    if dtype == "float16":
        return [v for (v,) in struct.iter_unpack("<e", raw)]
    if dtype == "bfloat16":
        return [struct.unpack("<f", struct.pack("<I", h << 16))[0] for (h,) in struct.iter_unpack("<H", raw)]
    return [v for (v,) in struct.iter_unpack("<f", raw)]


def _f32(v: float) -> float:
    """Round a Python float (binary64) to binary32, RNE — the only arithmetic primitive used.

    q < 2**16 is exact in binary32, so each step is a binary32 operation on binary32 operands
    evaluated in binary64 and rounded once more; with 53 ≥ 2·24 + 2 that double rounding
    always equals the direct binary32 result (Figueroa 1995).
    """
    try:
        return struct.unpack("<f", struct.pack("<f", v))[0]
    except OverflowError:  # beyond binary32's range: RNE gives ±inf
        return math.copysign(math.inf, v)


def _to_dtype_bits(v: float, dtype: str) -> bytes:
    """Step 5: RNE conversion of a float32 value, written from the spec without ml_dtypes."""
    if dtype == "float32":
        return struct.pack("<f", v)
    if dtype == "float64":
        return struct.pack("<d", v)
    if dtype == "float16":
        return struct.pack("<e", v)  # struct's binary16 packing rounds half to even
    u = struct.unpack("<I", struct.pack("<f", v))[0]
    u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return struct.pack("<H", u)


CLAMP = {"float16": 65504.0, "bfloat16": (2 - 2**-7) * 2.0**127,
         "float32": _f32(3.4028234663852886e38), "float64": _f32(3.4028234663852886e38)}


def reference_decode(codes: np.ndarray, blob: bytes, spec: ArraySpec, config: dict) -> bytes:
    """Dequantize by the letter of the affine module docstring (pure Python, per element)."""
    rows, cols = matrix_shape(spec.shape)
    gran, gs, pd = config["granularity"], config["group_size"], config["param_dtype"]
    R = 1 if gran == "tensor" else rows
    G = -(-cols // gs) if gran == "group" else 1
    vals = _widen(blob, pd)
    scale, offset = vals[: R * G], vals[R * G :]
    out = bytearray()
    flat = codes.reshape(rows, cols)
    for r in range(rows):
        for c in range(cols):
            cell = (0 if gran == "tensor" else r) * G + (c // gs if gran == "group" else 0)
            t = _f32(float(flat[r, c]) * scale[cell])  # exact product in binary64, then RNE to f32
            u = _f32(t + offset[cell])
            v = min(max(u, -CLAMP[spec.dtype]), CLAMP[spec.dtype])
            out += _to_dtype_bits(v, spec.dtype)
    return bytes(out)


@settings(max_examples=80, deadline=None)
@given(tensors(), codec_configs)
def test_strangers_reader_is_bit_exact(tx: tuple[np.ndarray, str], config: dict) -> None:
    x, dtype = tx
    codec, spec, enc = encode(x, dtype, config)
    y = codec.decode(enc.array, lambda i: enc.blobs[i], 1, spec)
    assert reference_decode(enc.array, enc.blobs[0], spec, enc.config) == y.tobytes()


def test_strangers_reader_on_hostile_params() -> None:
    """Huge stored params overflow float32 in step 2: both readers must clamp alike."""
    spec = ArraySpec("float16", (2, 3), "t")
    config = {"bits": 10, "granularity": "row", "group_size": 128, "param_dtype": "float32"}
    codec = AffineCodec(**config)
    blob = np.array([3e38, 1.5, -3e38, 0.25], dtype="<f4").tobytes()
    codes = np.array([[0, 1, 1023], [0, 2, 1023]], dtype=np.uint16)
    y = codec.decode(codes, lambda i: blob, 1, spec)
    assert reference_decode(codes, blob, spec, config) == y.tobytes()
    assert np.isfinite(y.astype(np.float32)).all()
    assert y[0, 2] == np.float16(65504) and y[0, 0] == np.float16(-65504)


def test_strangers_reader_with_float32_params_where_rounding_order_matters() -> None:
    """float32 params make q·S inexact in binary32, so a fused (FMA or float64) evaluation
    differs from the normative two-step one in most elements; both readers must agree."""
    x = np.random.default_rng(0).normal(size=(8, 64)).astype(np.float32)
    for bits, gran in ((10, "row"), (16, "group"), (13, "tensor")):
        config = {"bits": bits, "granularity": gran, "group_size": 16, "param_dtype": "float32"}
        codec, spec, enc = encode(x, "float32", config)
        y = codec.decode(enc.array, lambda i, e=enc: e.blobs[i], 1, spec)
        assert reference_decode(enc.array, enc.blobs[0], spec, enc.config) == y.tobytes()
        s, o = cell_params(codec, spec, enc.blobs[0])
        fused = (enc.array.astype(np.float64) * s + o).astype(np.float32)
        assert (fused != y).mean() > 0.1  # the order of rounding is observable here
