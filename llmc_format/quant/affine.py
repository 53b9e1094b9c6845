"""The ``affine`` stage: a float tensor <-> unsigned integer codes plus per-row parameters.

Why: the video codecs code integer samples (10-bit luma planes). An affine map per output
channel (row) — optionally per group of columns, or one per tensor — turns weights into such
samples. At 10 bits its grid error alone is ~54 dB SNR, far below the codecs' own error, so
the interesting choices (range, clipping, granularity) are about how the codec's noise maps
back to weights: a weight's error is its cell's ``scale`` times the code error.

Layout (see ``grid.py``): the tensor is viewed as a matrix (first axis = rows; 0-d and 1-D
tensors are one row) and parameters form R × G cells (row: one per row; group: one per
``group_size`` columns of a row; tensor: one).

Stage output: an array of dtype ``uint16`` and the input's shape, every code < 2**bits.

Params blob (the stage's only blob, index 0): ``scale[R][G]`` then ``offset[R][G]``, each
row-major and little-endian in ``param_dtype`` (float16 = IEEE binary16; bfloat16 = the
high 16 bits of a binary32; float32 = binary32); exactly 2·R·G·itemsize bytes. Every stored
parameter is finite and every scale is ≥ 0 (a decoder rejects the blob otherwise).

Dequantization (normative, bit-exact)
-------------------------------------
For the element at matrix position (r, c) with code q, let s, o be its cell's parameters
(cell (r, c // group_size) for group, (r, 0) for row, (0, 0) for tensor). Then

1. S = float32(s), O = float32(o)              (widening: exact)
2. t = fl32(float32(q) · S)                    (IEEE-754 binary32 multiply, round-to-nearest-even)
3. u = fl32(t + O)                             (binary32 add, RNE — *not* fused with step 2:
                                                no FMA)
4. v = min(max(u, −M), M)                      (M = largest finite value of the tensor dtype:
                                                65504 for float16, (2 − 2^−7)·2^127 for
                                                bfloat16, float32 max for float32 and float64)
5. x = v converted to the tensor dtype, round-to-nearest-even (exact for float32/float64).

Step 4 only matters for values at the edge of a dtype's range (and for hostile files): it
makes the result finite and deterministic instead of overflowing to inf.

Encoder (informative — any encoder writing valid codes and params is conforming)
--------------------------------------------------------------------------------
Per cell take lo/hi = min/max of the cell (or a clipped range, ``clip="mse"``), then
``o`` = the largest param_dtype value ≤ lo, ``s`` = the smallest param_dtype value with
o + L·s ≥ hi (L = 2**bits − 1), and ``q = clip(round_half_even((x − o) / s), 0, L)``
(q = 0 where s = 0). Rounding o down and s up keeps the whole cell on the grid, so
|x − dequant(q)| ≤ s/2 for every unclipped element, plus float32 rounding in steps 2–3 and
the dtype rounding of step 5.

Measured defaults (MiniLM-L6 fp32, all 103 float tensors, 22.7 M weights, 10 bits;
``tests/quant/test_measurements.py``, marked slow, re-checks the claims). "Unit-noise SNR"
is the weight SNR when every code gets noise of variance 1 — the shape of a video codec's
error, so it ranks choices by what survives the codec rather than by the grid alone.

| choice              | grid SNR | unit-noise SNR | params bpw |
|---------------------|----------|----------------|------------|
| row, float32 params | 54.56 dB | 43.75 dB       | 0.147      |
| row, float16 params | 54.54 dB | 43.75 dB       | 0.074      |
| row, bfloat16       | 54.51 dB | 43.72 dB       | 0.074      |
| group 128, float16  | 56.40 dB | 45.60 dB       | 0.250      |
| group 64, float16   | 57.38 dB | 46.57 dB       | 0.500      |
| tensor, float16     | 38.36 dB | 27.58 dB       | 0.0001     |

- ``param_dtype``: 2-byte params halve the cost (4 bytes per cell, i.e. per row, instead of
  8) for < 0.01 dB — codes are computed with the stored, rounded params, so rounding only
  moves the grid step by < 2^−10. ``auto`` (default) picks, per tensor, whichever of float16
  / bfloat16 gives the smaller Σ count·scale² (float16 on ties): float16 is finer, but its
  scales go subnormal below 2^−14 (MiniLM's key biases, range 0.004) and its offsets stop at
  ±65504, where bfloat16 (float32's range, 8-bit precision) is better. float32 only if
  neither fits.
- ``granularity``: row (default). Measured with the real codec (libvvenc, SmolLM2 layers
  0/7/15/29, SNR at equal all-in bits per weight, docs/results/tuning.md): group 128
  *loses* 1.1–1.2 dB (its params cost 0.27 bpw and the gain steps cost rate). Tensor-wide
  scaling *wins* despite its coarser grid: +0.5 dB with one QP for every tensor, and
  +1.3 dB over row when each tensor's QP gives the same step in weight units (what the
  rate-distortion allocator converges to) — every weight then gets the same codec noise,
  the MSE-optimal split, and no params are stored. But with one QP for all tensors it
  fails on tensors with outliers (MiniLM-L6, whose ``output.dense`` grid SNR is 25 dB:
  −1.6 to −4.3 dB), because the outliers set the step for the whole tensor; so tensor is
  the choice only together with per-tensor QPs, and row stays the safe default. The
  "16 dB loss" in the table above is at equal *code* noise, not at equal rate.
- ``clip``: none (default). With Gaussian noise added to the codes as a stand-in for the
  codec (MiniLM 2-D weights except embeddings), ``clip="mse"`` with ``clip_bits`` matched to
  the noise (Δ²/12 = σ²) gives 19.19 → 20.09 dB at σ = 15.4 codes and 10.99 → 13.19 dB at
  σ = 40 codes, and nothing at clip_bits = 10. With the real codec at equal rate it does
  not pay (clip_bits = 10 − (QP − 4)/6, VVC's step at that QP): +0.0 dB with row
  scaling, −0.05 to −0.25 dB with tensor scaling — a narrower range also stretches the
  codes, which costs the entropy coder what the finer step saves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from llmc_format import dtypes
from llmc_format.codecs.base import ArrayArrayCodec, ArraySpec, BlobFetcher, Encoded, Rows
from llmc_format.codecs.f32out import FLOAT_DTYPES, clamp_convert
from llmc_format.errors import CodecError, FormatError
from llmc_format.metrics import snr_record
from llmc_format.quant.grid import GRANULARITIES, Grid, Window, window

#: Tensor dtypes the stage accepts (float8 is excluded: 10-bit codes for 256 values is no gain).
INPUT_DTYPES = FLOAT_DTYPES
CODES_DTYPE = "uint16"
#: element types of the stored scales and offsets (numpy types from ``dtypes.to_numpy``)
PARAM_DTYPES = ("float16", "bfloat16", "float32")
PARAM_DTYPE_CHOICES = ("auto", *PARAM_DTYPES)
CLIP_CHOICES = ("none", "mse")

#: Clip ratios tried by ``clip="mse"``: the cell's range shrunk about its midpoint to
#: 100%, 99%, ..., 50% of min-max. A grid, not an optimiser, so results are reproducible.
CLIP_RATIOS = np.arange(100, 49, -1, dtype=np.float64) / 100.0

_F32_MAX = float(np.finfo(np.float32).max)


# --------------------------------------------------------------------------- parameters


@dataclass(frozen=True)
class AffineParams:
    """Scale and offset per cell, as stored: (R, G) arrays in the parameter dtype."""

    scale: np.ndarray
    offset: np.ndarray
    dtype: str

    @property
    def nbytes(self) -> int:
        return self.scale.nbytes + self.offset.nbytes

    def to_bytes(self) -> bytes:
        return self.scale.tobytes() + self.offset.tobytes()

    @classmethod
    def from_bytes(cls, blob: bytes, grid: Grid, dtype: str, name: str) -> AffineParams:
        """Parse and validate a params blob: exact length, finite values, scales ≥ 0."""
        dt = dtypes.to_numpy(dtype)
        n = grid.n_cells
        want = 2 * n * dt.itemsize
        if len(blob) != want:
            raise CodecError(
                f"tensor {name!r}: affine params blob is {len(blob)} bytes, expected {want} "
                f"(2 × {grid.param_rows}×{grid.groups} cells × {dt.itemsize}-byte {dtype})"
            )
        values = np.frombuffer(blob, dtype=dt).reshape(2, grid.param_rows, grid.groups)
        wide = values.astype(np.float32)
        if not np.isfinite(wide).all():
            raise CodecError(f"tensor {name!r}: affine params blob holds non-finite values")
        if (wide[0] < 0).any():
            raise CodecError(f"tensor {name!r}: affine params blob holds a negative scale")
        return cls(values[0], values[1], dtype)

    def wide(self) -> tuple[np.ndarray, np.ndarray]:
        """(scale, offset) widened to float32: step 1 of dequantization."""
        return self.scale.astype(np.float32), self.offset.astype(np.float32)


def _round_directed(values: np.ndarray, dt: np.dtype, up: bool) -> np.ndarray:
    """``values`` (float64) rounded to ``dt`` toward +inf (``up``) or −inf; may give ±inf."""
    with np.errstate(over="ignore"):
        out = values.astype(dt)
    wide = out.astype(np.float64)
    wrong = wide < values if up else wide > values
    if wrong.any():
        target = np.array(np.inf if up else -np.inf, dtype=dt)
        out[wrong] = np.nextafter(out[wrong], target)
    return out


def _fit_params(lo: np.ndarray, hi: np.ndarray, bits: int, dtype: str) -> AffineParams | None:
    """Params covering [lo, hi] per cell in ``dtype``; None if they do not fit the dtype."""
    with np.errstate(over="ignore", invalid="ignore"):  # out-of-range params -> None below
        return _fit_params_unchecked(lo, hi, bits, dtype)


def _fit_params_unchecked(
    lo: np.ndarray, hi: np.ndarray, bits: int, dtype: str
) -> AffineParams | None:
    dt = dtypes.to_numpy(dtype)
    levels = float(2**bits - 1)
    offset = _round_directed(lo, dt, up=False)
    off64 = offset.astype(np.float64)
    scale = _round_directed((hi - off64) / levels, dt, up=True)
    for _ in range(8):  # float64 rounding in (hi − o)/L can leave the top a hair short
        short = off64 + levels * scale.astype(np.float64) < hi
        if not short.any():
            break
        scale[short] = np.nextafter(scale[short], np.array(np.inf, dtype=dt))
    s64 = scale.astype(np.float64)
    if not (np.isfinite(off64).all() and np.isfinite(s64).all()):
        return None
    # The decoder works in float32: L·s (step 2) and o + L·s (step 3) must not overflow.
    top = levels * s64
    if (top > _F32_MAX).any() or (np.abs(off64 + top) > _F32_MAX).any():
        return None
    return AffineParams(scale, offset, dtype)


def choose_params(
    lo: np.ndarray, hi: np.ndarray, bits: int, param_dtype: str, name: str,
    counts: np.ndarray | float = 1.0,
) -> AffineParams:
    """Round the per-cell ranges to stored params in ``param_dtype``.

    ``auto`` picks, of float16 and bfloat16 (both 2 bytes), the one with the smaller
    Σ count·scale² — the weight-domain error energy any fixed code-domain noise (grid
    rounding or a video codec's) turns into — float16 on ties. ``counts`` = elements per cell.
    """
    if param_dtype == "auto":
        best: tuple[float, AffineParams] | None = None
        for candidate in ("float16", "bfloat16"):
            params = _fit_params(lo, hi, bits, candidate)
            if params is None:
                continue
            cost = float(np.sum(counts * params.scale.astype(np.float64) ** 2))
            if best is None or cost < best[0]:
                best = (cost, params)
        if best is not None:
            return best[1]
        param_dtype = "float32"
    params = _fit_params(lo, hi, bits, param_dtype)
    if params is None:
        span = float(np.max(hi - lo)) if lo.size else 0.0
        raise CodecError(
            f"tensor {name!r}: value range (min {float(np.min(lo)):.6g}, widest cell "
            f"{span:.6g}) does not fit {param_dtype} affine parameters with float32 decoding"
        )
    return params


# --------------------------------------------------------------------------- ranges


def _cell_ranges(m: np.ndarray, grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    """Per-cell (min, max) in float64, shape (R, G)."""
    shape = (grid.param_rows, grid.groups)
    lo, hi = np.zeros(shape), np.zeros(shape)
    if m.size == 0:
        return lo, hi
    if grid.granularity == "tensor":
        lo[:] = np.inf
        hi[:] = -np.inf
    for w in grid.row_blocks():
        block = m[w.row0 : w.row0 + w.nrows].astype(np.float64)
        bmin, bmax = grid.reduce(np.minimum, block), grid.reduce(np.maximum, block)
        if grid.granularity == "tensor":
            lo, hi = np.minimum(lo, bmin), np.maximum(hi, bmax)
        else:
            lo[w.row0 : w.row0 + w.nrows] = bmin
            hi[w.row0 : w.row0 + w.nrows] = bmax
    return lo, hi


def mse_clip(
    m: np.ndarray, grid: Grid, lo: np.ndarray, hi: np.ndarray, clip_bits: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shrink each cell's range to minimise expected squared error; returns (lo, hi, ratio).

    For each ratio r in ``CLIP_RATIOS`` the range is shrunk about its midpoint to r·(hi−lo)
    and the cost is  mean((x − clip(x))²) + Δ²/12  with Δ = r·(hi−lo) / (2**clip_bits − 1):
    the clipping error plus the error of a uniform noise of one step Δ. ``clip_bits`` is the
    *effective* precision: the grid's own bits when only rounding matters, fewer when a lossy
    codec adds noise of a coarser step (e.g. ~4 at a rate where the codec's error equals a
    4-bit grid's). Ties go to the wider range (r = 1 first), so constant cells are untouched.
    """
    mid = (lo + hi) / 2.0
    half = (hi - lo) / 2.0
    step2 = ((hi - lo) / (2.0**clip_bits - 1.0)) ** 2 / 12.0  # Δ²/12 at r = 1
    counts = grid.cell_counts()
    n_r = len(CLIP_RATIOS)
    cost = np.empty((n_r, grid.param_rows, grid.groups))
    if grid.granularity == "tensor":
        cost[:] = 0.0
    for w in grid.row_blocks():
        block = m[w.row0 : w.row0 + w.nrows].astype(np.float64)
        rows = slice(w.row0, w.row0 + w.nrows) if grid.granularity != "tensor" else slice(0, 1)
        mid_e, half_e = grid.expand(mid, w), grid.expand(half, w)
        for i, r in enumerate(CLIP_RATIOS):
            over = np.abs(block - mid_e) - r * half_e
            np.maximum(over, 0.0, out=over)
            err = grid.reduce(np.add, over * over)
            if grid.granularity == "tensor":
                cost[i] += err
            else:
                cost[i, rows] = err
    cost /= np.maximum(counts, 1.0)
    cost += (CLIP_RATIOS**2)[:, None, None] * step2[None]
    best = CLIP_RATIOS[np.argmin(cost, axis=0)]
    return mid - best * half, mid + best * half, best


# --------------------------------------------------------------------------- codes


def dequantize_block(
    codes: np.ndarray, scale32: np.ndarray, offset32: np.ndarray, dtype: str
) -> np.ndarray:
    """Steps 2–5 of the normative dequantization for broadcast-compatible float32 params."""
    v = codes.astype(np.float32)
    # casting="no": float32 in, float32 out — a float64 detour would round twice.
    with np.errstate(over="ignore", invalid="ignore"):  # hostile params may overflow: step 4
        np.multiply(v, scale32, out=v, casting="no")
        np.add(v, offset32, out=v, casting="no")
    return clamp_convert(v, dtype)


def _quantize_block(
    x64: np.ndarray, scale64: np.ndarray, offset64: np.ndarray, levels: int
) -> np.ndarray:
    """Codes of one block (informative encoder rule: round half even, clip to [0, L])."""
    pos = scale64 > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(pos, np.rint((x64 - offset64) / np.where(pos, scale64, 1.0)), 0.0)
    np.clip(q, 0, levels, out=q)
    return q.astype(np.uint16)


@dataclass(frozen=True)
class Quantized:
    """What ``quantize`` produced: codes, stored params and plain-data facts."""

    codes: np.ndarray
    params: AffineParams
    info: dict[str, Any]


def _check_finite(x: np.ndarray, name: str) -> None:
    finite = np.isfinite(x)
    if not finite.all():
        bad = np.argwhere(~finite)
        where = tuple(int(i) for i in bad[0])
        raise CodecError(
            f"tensor {name!r}: {len(bad)} non-finite value(s) (first at index {list(where)}: "
            f"{x[where]}); lossy coding of NaN/inf is not allowed — store this tensor exactly"
        )


def quantize(
    x: np.ndarray,
    *,
    bits: int = 10,
    granularity: str = "row",
    group_size: int = 128,
    clip: str = "none",
    clip_bits: float | None = None,
    param_dtype: str = "auto",
    name: str = "",
) -> Quantized:
    """Quantize a finite float array; the functional core of ``AffineCodec.encode``."""
    _check_finite(x, name)
    grid = Grid.of(tuple(x.shape), granularity, group_size)
    m = x.reshape(grid.rows, grid.cols)
    lo, hi = _cell_ranges(m, grid)
    ratio = None
    if clip == "mse" and m.size:
        lo, hi, ratio = mse_clip(m, grid, lo, hi, float(bits if clip_bits is None else clip_bits))
    params = choose_params(lo, hi, bits, param_dtype, name, grid.cell_counts())
    s64, o64 = params.scale.astype(np.float64), params.offset.astype(np.float64)
    s32, o32 = params.wide()
    dtype = _dtype_name(x.dtype)
    codes = np.empty((grid.rows, grid.cols), dtype=np.uint16)
    signal = noise = max_err = 0.0
    for w in grid.row_blocks():
        rows = slice(w.row0, w.row0 + w.nrows)
        x64 = m[rows].astype(np.float64)
        codes[rows] = q = _quantize_block(x64, grid.expand(s64, w), grid.expand(o64, w), 2**bits - 1)
        deq = dequantize_block(q, grid.expand(s32, w), grid.expand(o32, w), dtype)
        diff = x64 - deq.astype(np.float64)
        signal += float(np.vdot(x64, x64))
        noise += float(np.vdot(diff, diff))
        max_err = max(max_err, float(np.abs(diff).max(initial=0.0)))
    info: dict[str, Any] = {
        "bits": bits,
        "granularity": granularity,
        "param_dtype": params.dtype,
        "params_bytes": params.nbytes,
        "params_bytes_per_row": params.nbytes / grid.rows if grid.rows else 0.0,
        "params_bits_per_weight": 8.0 * params.nbytes / m.size if m.size else 0.0,
        "grid_mse": noise / m.size if m.size else 0.0,
        "grid_snr_db": snr_record(signal, noise),
        "grid_max_abs_error": max_err,
        "clip": clip,
    }
    if granularity == "group":
        info["group_size"] = group_size
    if ratio is not None:
        info["clip_bits"] = float(bits if clip_bits is None else clip_bits)
        info["clip_ratio_mean"] = float(ratio.mean()) if ratio.size else 1.0
    return Quantized(codes.reshape(x.shape), params, info)


def dequantize(
    codes: np.ndarray, params: AffineParams, grid: Grid, win: Window, dtype: str
) -> np.ndarray:
    """Dequantize the codes of matrix block ``win`` (shaped (nrows, ncols)) to ``dtype``."""
    s32, o32 = params.wide()
    out = np.empty((win.nrows, win.ncols), dtype=dtypes.to_numpy(dtype))
    for w in grid.row_blocks(win):
        local = slice(w.row0 - win.row0, w.row0 - win.row0 + w.nrows)
        out[local] = dequantize_block(codes[local], grid.expand(s32, w), grid.expand(o32, w), dtype)
    return out


def _dtype_name(dt: np.dtype) -> str:
    try:
        name = dtypes.name_of(dt)
    except FormatError:
        name = None
    if name in INPUT_DTYPES:
        return name
    raise CodecError(f"affine quantization takes float16/bfloat16/float32/float64, got {dt}")


# --------------------------------------------------------------------------- config


def _check_int(name: str, value: Any, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or not lo <= value <= hi:
        raise CodecError(f"affine: {name} must be an integer in [{lo}, {hi}], got {value!r}")
    return int(value)


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise CodecError(f"affine: {name} must be one of {list(choices)}, got {value!r}")
    return value


def validate_config(
    bits: Any, granularity: Any, group_size: Any, clip: Any, clip_bits: Any, param_dtype: Any
) -> dict[str, Any]:
    """Type- and range-check a config (it may come from a file); the normalized params."""
    bits = _check_int("bits", bits, 1, 16)
    if clip_bits is None:
        clip_bits = float(bits)
    if (
        isinstance(clip_bits, bool)
        or not isinstance(clip_bits, int | float | np.integer | np.floating)
        or not (1.0 <= float(clip_bits) <= 16.0)
    ):
        raise CodecError(f"affine: clip_bits must be a number in [1, 16], got {clip_bits!r}")
    return {
        "bits": bits,
        "granularity": _check_choice("granularity", granularity, GRANULARITIES),
        "group_size": _check_int("group_size", group_size, 1, 1 << 24),
        "clip": _check_choice("clip", clip, CLIP_CHOICES),
        "clip_bits": float(clip_bits),
        "param_dtype": _check_choice("param_dtype", param_dtype, PARAM_DTYPE_CHOICES),
    }


# --------------------------------------------------------------------------- codec


class AffineCodec(ArrayArrayCodec):
    """Array→array stage: float tensor → uint16 codes of ``bits`` bits + a params blob.

    Config (all plain data, all stored): ``bits`` (1..16, default 10), ``granularity``
    (row | group | tensor, default row), ``group_size`` (columns per group, default 128;
    used by ``group`` only), ``clip`` (none = min-max | mse, default none), ``clip_bits``
    (effective precision the MSE clip search assumes, default = bits), ``param_dtype``
    (auto | float16 | bfloat16 | float32; a stored config always names a concrete dtype).
    See the module docstring for the exact dequantization and the measurements.
    """

    codec_id = "affine"
    required_keys = frozenset({"bits", "granularity", "group_size", "clip", "clip_bits",
                               "param_dtype"})

    def __init__(
        self,
        *,
        bits: int = 10,
        granularity: str = "row",
        group_size: int = 128,
        clip: str = "none",
        clip_bits: float | None = None,
        param_dtype: str = "auto",
    ) -> None:
        super().__init__(
            **validate_config(bits, granularity, group_size, clip, clip_bits, param_dtype)
        )

    @property
    def bits(self) -> int:
        return self.params["bits"]

    def grid(self, spec: ArraySpec) -> Grid:
        return Grid.of(spec.shape, self.params["granularity"], self.params["group_size"])

    def _check_input(self, spec: ArraySpec) -> None:
        if spec.dtype not in INPUT_DTYPES:
            raise CodecError(
                f"tensor {spec.name!r}: affine quantization takes float16/bfloat16/float32/"
                f"float64, not {spec.dtype}"
            )

    def resolve(self, spec: ArraySpec) -> ArraySpec:
        self._check_input(spec)
        return ArraySpec(CODES_DTYPE, spec.shape, spec.name)

    def encode(self, array: np.ndarray, spec: ArraySpec) -> Encoded:
        self._check_input(spec)
        spec.check(array, what="input")
        p = self.params
        qz = quantize(
            array, bits=p["bits"], granularity=p["granularity"], group_size=p["group_size"],
            clip=p["clip"], clip_bits=p["clip_bits"], param_dtype=p["param_dtype"],
            name=spec.name,
        )
        config = {**self.get_config(), "param_dtype": qz.params.dtype}
        return Encoded(blobs=[qz.params.to_bytes()], config=config, array=qz.codes, info=qz.info)

    def decode(
        self, array: np.ndarray, fetch: BlobFetcher, n_blobs: int, spec: ArraySpec,
        rows: Rows | None = None,
    ) -> np.ndarray:
        """Dequantize codes ``array`` (tensor rows ``rows`` of ``spec``, the stage's input spec)."""
        self._check_input(spec)
        pd = self.params["param_dtype"]
        if pd == "auto":
            raise CodecError(f"tensor {spec.name!r}: stored affine config must name its param_dtype")
        if n_blobs != 1:
            raise CodecError(f"tensor {spec.name!r}: affine stage needs 1 params blob, has {n_blobs}")
        win = window(spec.shape, rows, spec.name)
        ArraySpec(CODES_DTYPE, spec.shape, spec.name).check(array, rows, what="codes")
        levels = 2 ** self.bits - 1
        if array.size and int(array.max()) > levels:
            raise CodecError(
                f"tensor {spec.name!r}: code {int(array.max())} exceeds {levels} ({self.bits} bits)"
            )
        grid = self.grid(spec)
        params = AffineParams.from_bytes(fetch(0), grid, pd, spec.name)
        out = dequantize(array.reshape(win.nrows, win.ncols), params, grid, win, spec.dtype)
        return out.reshape(spec.rows_shape(rows))

    def raw_record(self, spec: ArraySpec, fetch: BlobFetcher, n_blobs: int) -> dict[str, Any]:
        """``extract --raw``: the stored scale/offset of every cell and the dequantization
        formula (spec/FORMAT.md §7.2), so numpy alone turns the codes into the tensor."""
        if n_blobs != 1:
            raise CodecError(f"tensor {spec.name!r}: affine stage needs 1 params blob, has {n_blobs}")
        grid = self.grid(spec)
        params = AffineParams.from_bytes(fetch(0), grid, self.params["param_dtype"], spec.name)
        return {
            "stage": "affine",
            "bits": self.bits,
            "granularity": self.params["granularity"],
            "group_size": self.params["group_size"],
            "param_dtype": self.params["param_dtype"],
            "param_shape": [grid.param_rows, grid.groups],
            # float16/bfloat16/float32 values widen exactly to float64, which JSON keeps exactly
            "scale": params.scale.astype(np.float64).tolist(),
            "offset": params.offset.astype(np.float64).tolist(),
            "formula": DEQUANT_FORMULA,
            "reference": "spec/FORMAT.md §7.2 (affine); llmc_format/quant/affine.py docstring",
        }


#: ``extract --raw``: the dequantization, restated from spec/FORMAT.md §7.2 so a sidecar stands alone
DEQUANT_FORMULA = (
    "For the element at matrix position (r, c) with code q, take its cell's stored params "
    "s = scale[r'][g], o = offset[r'][g] (r' = r, or 0 for granularity 'tensor'; g = c // group_size "
    "for 'group', else 0). S = float32(s), O = float32(o); t = fl32(float32(q) * S); "
    "u = fl32(t + O) (two IEEE binary32 round-to-nearest-even operations, no fused multiply-add); "
    "v = min(max(u, -M), M) with M = the largest finite value of the tensor dtype "
    "(float32 max for float32/float64); x = v rounded to the tensor dtype (nearest-even)."
)


def params_bits_per_weight(shape: tuple[int, ...], granularity: str, group_size: int,
                           param_bytes: int = 2) -> float:
    """All-in cost of the params in bits per weight (for planning without encoding)."""
    grid = Grid.of(shape, granularity, group_size)
    n = math.prod(shape)
    return 16.0 * param_bytes * grid.n_cells / n if n else 0.0
