"""The ``blockdct`` stage: a float tensor <-> integer codes of its block-wise inverse DCT.

Why: a video codec transforms each block of samples with a DCT, then quantizes and
entropy-codes the coefficients. Weights are noise-like, so that DCT buys no energy
compaction; it only mixes 1,024 weights into each coefficient. If the samples handed to
the codec are the *inverse* DCT of the weights, block by block on the codec's own 32x32
transform grid, the codec's forward DCT gives back the weights themselves: its
quantizer (dependent quantization, RDOQ) and its coefficient coder work on the weights.
Measured with libvvenc (docs/results/tuning.md, "blockdct"): +0.14/+0.17/+0.21/+0.32 dB
at 2/2.5/3/4 bits per weight on SmolLM2's decoder weights, +0.20 to +0.77 dB on MiniLM's,
against per-tensor affine codes at equal rate; the inverse-DCT domain also spreads
outliers over their block, so its 10-bit grid is finer (49.8 vs 42.5 dB on SmolLM2).

Layout: the tensor is viewed as the matrix ``(rows, cols) = (shape[0], prod(shape[1:]))``.
With ``B = block``, the *core* is its top-left ``B*floor(rows/B)`` x ``B*floor(cols/B)``
part, cut into B x B blocks; the rest (the *edge*: a last partial band of rows and a
right strip of columns) is not transformed. One scale and one offset per tensor (in the
config); no blobs.

Decoding (normative, bit-exact). Let ``h = 2**(bits-1)``, ``p = precision`` and ``M`` the
B x B integer matrix ``M[k][n] = round(2**p * c_k * sqrt(2/B) * cos(pi*(2n+1)*k/(2B)))``
(``c_0 = 1/sqrt(2)``, else 1; ``dct_matrix`` builds it and checks that no entry is near a
rounding tie; spec/FORMAT.md gives its checksum). For codes ``q`` (uint16, < 2**bits):

1. ``c = q - h`` as integers;
2. each core block ``X`` of ``c``: ``Z = M · X · Mᵀ`` in exact integer arithmetic
   (|Z| < 2**53 for every allowed config, so float64 matrix products of these integers
   are exact in any summation order, FMA or not: any BLAS gives the same bits);
3. ``S = float32(scale)``, ``O = float32(offset)``; core: ``T = fl32(S · 2**(-2p))``,
   ``u = fl32(fl32(float32(Z) · T) + O)``; edge: ``u = fl32(fl32(float32(c) · S) + O)``
   (binary32 multiply then add, round-to-nearest-even, no FMA);
4. clamp to the dtype's finite range and convert, as ``affine`` steps 4–5 do.

Rows: rows ``a..b`` need the whole bands of B rows they touch (edge rows: only
themselves); ``input_rows`` says which, and the pipeline fetches those from the video
stage.

Encoder (informative): ``offset`` = the tensor's mean, rounded to float32; ``y`` = the
inverse transform of ``x - offset`` (``A⁻¹ · X · A⁻ᵀ`` per core block, with ``A = M/2**p``
and its exact inverse, so step 2 undoes it; the edge as is); ``scale`` = the smallest
float32 ≥ ``max|y| / (h - 1 - h//64)`` (a margin of h/64 codes keeps the codec's
overshoot off the clipping bounds); ``q = clip(round_half_even(y / scale) + h, 0, 2h - 1)``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from typing import Any

import numpy as np

from llmc_format import dtypes
from llmc_format.codecs.base import ArrayArrayCodec, ArraySpec, BlobFetcher, Encoded, Rows
from llmc_format.errors import CodecError
from llmc_format.metrics import snr_record
from llmc_format.quant.affine import CODES_DTYPE, INPUT_DTYPES, _check_finite, dequantize_block

BLOCKS = (4, 8, 16, 32, 64)
DEFAULT_BLOCK = 32
DEFAULT_PRECISION = 14
PRECISIONS = range(8, 17)
_F32_MAX = float(np.finfo(np.float32).max)


@functools.cache
def dct_matrix(block: int, precision: int) -> np.ndarray:
    """The integer DCT-II matrix ``M`` (int64, B x B) of the normative decoding."""
    out = np.empty((block, block), dtype=np.int64)
    for k in range(block):
        ck = math.sqrt(0.5) if k == 0 else 1.0
        for n in range(block):
            v = (2.0**precision) * ck * math.sqrt(2.0 / block) * math.cos(
                math.pi * (2 * n + 1) * k / (2 * block))
            if abs(abs(v - math.trunc(v)) - 0.5) < 1e-6:  # never happens for allowed configs
                raise CodecError(f"blockdct: M[{k}][{n}] = {v!r} is too close to a rounding tie")
            out[k, n] = int(math.copysign(math.floor(abs(v) + 0.5), v))
    return out


@functools.cache
def _matrix64(block: int, precision: int) -> np.ndarray:
    """``M`` as float64 (exact: small integers), the operand of step 2's products."""
    return dct_matrix(block, precision).astype(np.float64)


def _bound_ok(bits: int, block: int, precision: int) -> bool:
    """Whether |Z| < 2**53 for any codes: the float64 products of step 2 are then exact."""
    m = int(np.abs(dct_matrix(block, precision)).max())
    return block * block * (2 ** (bits - 1)) * m * m < 2**53


def _matrix_shape(shape: tuple[int, ...], name: str) -> tuple[int, int]:
    if len(shape) < 2:
        raise CodecError(f"tensor {name!r}: blockdct needs a tensor of >= 2 dimensions, "
                         f"got shape {list(shape)}")
    return shape[0], math.prod(shape[1:])


def _smallest_f32_at_least(v: float) -> np.float32:
    f = np.float32(v)
    return f if float(f) >= v else np.nextafter(f, np.float32(np.inf))


class BlockDctCodec(ArrayArrayCodec):
    """Array→array stage: float tensor → uint16 codes of its block-wise inverse DCT.

    Config: ``bits`` (1..16, default 10), ``block`` (4..64, a power of 2; default 32, the
    VVC transform size the ``vvc`` default forces), ``precision`` (8..16, default 14: the
    bits of ``M``), and after encoding ``scale`` (> 0) and ``offset``, finite float32 values.
    See the module docstring for the exact decoding.
    """

    codec_id = "blockdct"
    required_keys = frozenset({"bits", "block", "precision", "scale", "offset"})

    def __init__(self, *, bits: int = 10, block: int = DEFAULT_BLOCK,
                 precision: int = DEFAULT_PRECISION, scale: float | None = None,
                 offset: float | None = None) -> None:
        for key, value, ok in (("bits", bits, range(1, 17)), ("block", block, BLOCKS),
                               ("precision", precision, PRECISIONS)):
            if isinstance(value, bool) or not isinstance(value, int) or value not in ok:
                raise CodecError(f"blockdct: {key} must be one of {list(ok)}, got {value!r}")
        if not _bound_ok(bits, block, precision):
            raise CodecError(f"blockdct: bits={bits}, block={block}, precision={precision} "
                             "would overflow exact float64 arithmetic")
        params: dict[str, Any] = {"bits": bits, "block": block, "precision": precision}
        if (scale is None) != (offset is None):
            raise CodecError("blockdct: scale and offset come together")
        if scale is not None:
            for key, value in (("scale", scale), ("offset", offset)):
                if isinstance(value, bool) or not isinstance(value, int | float) or not (
                        math.isfinite(value) and abs(value) <= _F32_MAX
                        and float(np.float32(value)) == value):
                    raise CodecError(f"blockdct: {key} must be a finite float32 value, got {value!r}")
            if not scale > 0:
                raise CodecError(f"blockdct: scale must be > 0, got {scale!r}")
            params["scale"], params["offset"] = float(scale), float(offset)  # type: ignore[arg-type]
        super().__init__(**params)

    @property
    def row_align(self) -> int:
        return self.params["block"]

    def resolve(self, spec: ArraySpec) -> ArraySpec:
        self._check_input(spec)
        return ArraySpec(CODES_DTYPE, spec.shape, spec.name)

    def _check_input(self, spec: ArraySpec) -> None:
        if spec.dtype not in INPUT_DTYPES:
            raise CodecError(f"tensor {spec.name!r}: blockdct takes float16/bfloat16/float32/"
                             f"float64, not {spec.dtype}")
        _matrix_shape(spec.shape, spec.name)

    def input_rows(self, rows: Rows | None, spec: ArraySpec) -> Rows | None:
        """The rows of codes needed to decode rows ``rows``: whole bands of ``block`` rows."""
        if rows is None:
            return None
        b = self.params["block"]
        core = b * (spec.shape[0] // b)
        lo, hi = rows
        if lo >= hi:
            return rows
        return (b * (lo // b) if lo < core else lo, min(core, -(-hi // b) * b) if hi <= core else hi)

    # -- encode ------------------------------------------------------------------------

    def encode(self, array: np.ndarray, spec: ArraySpec) -> Encoded:
        self._check_input(spec)
        spec.check(array, what="input")
        name = spec.name
        rows, cols = _matrix_shape(spec.shape, name)
        x = array.reshape(rows, cols)
        bits, block = self.params["bits"], self.params["block"]
        half = 2 ** (bits - 1)
        offset, scale, inv = self._offset_and_scale(x, name)
        codes = np.empty((rows, cols), dtype=np.uint16)
        sig = noise = max_err = 0.0
        config = {**self.get_config(), "scale": float(scale), "offset": float(offset)}
        done = BlockDctCodec.from_config(config)
        assert isinstance(done, BlockDctCodec)
        for band, core in _bands(rows, block):
            y = self._forward(x[band], offset, inv, core)
            q = np.clip(np.rint(y / float(scale)) + half, 0, 2 * half - 1).astype(np.uint16)
            codes[band] = q
            x64 = x[band].astype(np.float64)
            diff = x64 - done._dequantize(q, core, spec.dtype).astype(np.float64)
            sig += float(np.vdot(x64, x64))
            noise += float(np.vdot(diff, diff))
            max_err = max(max_err, float(np.abs(diff).max(initial=0.0)))
        info = {
            "bits": bits, "granularity": "tensor", "transform": f"dct{block}",
            "params_bytes": 0, "params_bytes_per_row": 0.0, "params_bits_per_weight": 0.0,
            "grid_mse": noise / x.size if x.size else 0.0,
            "grid_snr_db": snr_record(sig, noise), "grid_max_abs_error": max_err,
            "scale": float(scale), "offset": float(offset),
        }
        return Encoded(blobs=[], config=config, array=codes.reshape(spec.shape), info=info)

    def _offset_and_scale(self, x: np.ndarray, name: str) -> tuple[np.float32, np.float32, np.ndarray]:
        """(offset, scale, A⁻¹) the encoder rule picks for the matrix ``x`` (two passes)."""
        bits, block, prec = self.params["bits"], self.params["block"], self.params["precision"]
        half = 2 ** (bits - 1)
        _check_finite(x, name)
        total = sum(float(x[band].sum(dtype=np.float64)) for band, _ in _bands(x.shape[0], block))
        offset = np.float32(total / max(x.size, 1))
        inv = np.linalg.inv(_matrix64(block, prec) / 2.0**prec)
        peak = max((float(np.abs(self._forward(x[band], offset, inv, core)).max(initial=0.0))
                    for band, core in _bands(x.shape[0], block)), default=0.0)
        room = half - 1 - half // 64
        scale = _smallest_f32_at_least(peak / room) if peak > 0 and room > 0 else np.float32(1.0)
        if not (np.isfinite(scale) and scale > 0):
            raise CodecError(f"tensor {name!r}: values too large for blockdct's float32 scale")
        return offset, scale, inv

    def code_span(self, array: np.ndarray) -> float:
        """The weight-domain width of the whole code range (``scale · (2**bits − 1)``) the
        encoder would choose for ``array``: what a per-tensor affine's max − min is."""
        rows, cols = _matrix_shape(tuple(array.shape), "")
        _, scale, _ = self._offset_and_scale(np.asarray(array).reshape(rows, cols), "")
        return float(scale) * (2 ** self.params["bits"] - 1)

    def _forward(self, xb: np.ndarray, offset: np.float32, inv: np.ndarray,
                 core: bool) -> np.ndarray:
        """``y`` of one band of rows: the inverse transform of its core blocks (``core``:
        a band of ``block`` core rows), the edge as is."""
        y = xb.astype(np.float64) - float(offset)
        core_cols = self._core_cols(y.shape[1])
        if core and core_cols:
            y[:, :core_cols] = _blocks_transform(y[:, :core_cols], inv)
        return y

    def _core_cols(self, cols: int) -> int:
        return self.params["block"] * (cols // self.params["block"])

    # -- decode ------------------------------------------------------------------------

    def decode(self, array: np.ndarray, fetch: BlobFetcher, n_blobs: int, spec: ArraySpec,
               rows: Rows | None = None) -> np.ndarray:
        """Rows ``rows`` of the tensor from the codes of rows ``input_rows(rows)``."""
        self._check_input(spec)
        name = spec.name
        if n_blobs:
            raise CodecError(f"tensor {name!r}: blockdct stores no blobs, the entry has {n_blobs}")
        if "scale" not in self.params:
            raise CodecError(f"tensor {name!r}: blockdct config lacks scale/offset "
                             "(it was not produced by encode)")
        n_rows, cols = _matrix_shape(spec.shape, name)
        want = (0, n_rows) if rows is None else rows
        have = self.input_rows(want, spec)
        assert have is not None
        ArraySpec(CODES_DTYPE, spec.shape, name).check(array, have, what="codes")
        codes = array.reshape(have[1] - have[0], cols)
        if codes.size and int(codes.max()) >= 2 ** self.params["bits"]:
            raise CodecError(f"tensor {name!r}: code {int(codes.max())} exceeds "
                             f"{self.params['bits']} bits")
        out = np.empty((want[1] - want[0], cols), dtype=spec.np_dtype)
        block = self.params["block"]
        core_rows = block * (n_rows // block)
        r = have[0]
        while r < have[1]:
            core = r < core_rows
            n = block if core else have[1] - r  # a core band, or all the edge rows asked
            lo, hi = max(r, want[0]), min(r + n, want[1])
            if lo < hi:
                u = self._dequantize(codes[r - have[0]:r - have[0] + n], core, spec.dtype)
                out[lo - want[0]:hi - want[0]] = u[lo - r:hi - r]
            r += n
        return out.reshape(spec.rows_shape(rows))

    def raw_record(self, spec: ArraySpec, fetch: BlobFetcher, n_blobs: int) -> dict[str, Any]:
        """``extract --raw``: what the integer codes are (block inverse-DCT codes of the
        weights), the stored scale and offset, the integer matrix ``M`` and the decoding
        steps of the module docstring (spec/FORMAT.md §7.5), so numpy alone rebuilds the
        tensor bit for bit."""
        if n_blobs:
            raise CodecError(f"tensor {spec.name!r}: blockdct stores no blobs, the entry has {n_blobs}")
        if "scale" not in self.params:
            raise CodecError(f"tensor {spec.name!r}: blockdct config lacks scale/offset "
                             "(it was not produced by encode)")
        block, prec = self.params["block"], self.params["precision"]
        return {
            "stage": "blockdct",
            "bits": self.params["bits"], "block": block, "precision": prec,
            "scale": self.params["scale"], "offset": self.params["offset"],
            "dct_matrix": dct_matrix(block, prec).tolist(),
            "formula": BLOCKDCT_FORMULA,
            "reference": "spec/FORMAT.md §7.5 (blockdct); llmc_format/quant/blockdct.py docstring",
        }

    def _dequantize(self, q: np.ndarray, core: bool, dtype: str) -> np.ndarray:
        """Steps 1–5 for a band of codes ``q`` (``core``: ``block`` rows of the core).

        Steps 3–5 are ``affine``'s normative ones (``dequantize_block``): the core's values
        are ``float32(Z)`` with the step ``T``, the edge's the centred codes with ``S``.
        """
        bits, prec = self.params["bits"], self.params["precision"]
        s32, o32 = np.float32(self.params["scale"]), np.float32(self.params["offset"])
        c = q.astype(np.float64) - 2 ** (bits - 1)  # integers, exact in float64
        core_cols = self._core_cols(q.shape[1]) if core else 0
        out = np.empty(q.shape, dtype=dtypes.to_numpy(dtype))
        if core_cols:
            z = _blocks_transform(c[:, :core_cols], _matrix64(self.params["block"], prec))
            t32 = np.float32(s32 * np.float32(2.0 ** (-2 * prec)))
            out[:, :core_cols] = dequantize_block(z, t32, o32, dtype)
        out[:, core_cols:] = dequantize_block(c[:, core_cols:], s32, o32, dtype)
        return out


#: ``extract --raw``: the decoding, restated from spec/FORMAT.md §7.5 so a sidecar stands alone
BLOCKDCT_FORMULA = (
    "The codes q (the matrix of decoded samples) are integer codes of the block-wise inverse "
    "DCT of the weights. B = block, p = precision, h = 2**(bits-1), M = dct_matrix (B x B "
    "integers). The core is the top-left B*floor(rows/B) x B*floor(cols/B) part of the matrix, "
    "cut into B x B blocks; the rest (edge) is not transformed. 1. c = q - h (integers). "
    "2. each core block X of c: Z = M . X . M^T in exact integer arithmetic (|Z| < 2**53, so "
    "float64 products are exact). 3. S = float32(scale), O = float32(offset); core: "
    "T = fl32(S * 2**(-2p)), u = fl32(fl32(float32(Z) * T) + O); edge: u = fl32(fl32(float32(c) "
    "* S) + O) (IEEE binary32 round-to-nearest-even, no fused multiply-add). 4. v = min(max(u, "
    "-Mx), Mx) with Mx = the largest finite value of the tensor dtype (float32 max for "
    "float32/float64); x = v rounded to the tensor dtype (nearest-even)."
)


def _bands(rows: int, block: int) -> Iterator[tuple[slice, bool]]:
    """(rows, is core) of the bands of ``block`` core rows, then of all the edge rows."""
    core = block * (rows // block)
    for r in range(0, core, block):
        yield slice(r, r + block), True
    if core < rows:  # edge rows are not transformed: one band for all of them
        yield slice(core, rows), False


def _blocks_transform(x: np.ndarray, m: np.ndarray) -> np.ndarray:
    """``m · X · mᵀ`` for each ``B x B`` block ``X`` of a band ``x`` (``B`` rows, k·B columns).

    The decoder passes ``M`` (integer-valued), the encoder ``A⁻¹``. Two float64 matrix
    products over the whole band (one left, one right), no Python loop per block.
    """
    b = m.shape[0]
    left = m @ x                     # (B, k·B): the left product of every block at once
    # row r of block j is left[r, j·B:(j+1)·B]: as rows of a (B·k, B) matrix, one product
    return (left.reshape(-1, b) @ m.T).reshape(b, -1)
