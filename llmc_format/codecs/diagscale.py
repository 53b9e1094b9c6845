"""The ``diagscale`` stage: per-column and per-row multipliers, undone exactly at decode.

Why: a linear layer's output error is ``(W − Ŵ)·X``, so the columns of ``W`` that meet
large activations matter more than the others (AWQ, GPTQ, llama.cpp's importance
matrix). A codec that spreads its error evenly over the values it codes can be made to
spend it where the model does not feel it by coding ``W·diag(1/c)`` instead of ``W``:
columns given a small ``c`` are magnified before coding, so after decoding multiplies
them by ``c`` again their share of the codec's error shrinks by ``c``. This stage stores
those multipliers and applies them at decode, bit-exactly; *choosing* them (from
calibration statistics) is the packer's business, not this module's.

Normative (spec/FORMAT.md §7.9). The tensor is viewed as the matrix
``(R, C) = (shape[0], prod(shape[1:]))`` (a 0-d tensor is 1 × 1, a 1-D tensor of n
elements is n × 1: its rows are its elements, as everywhere in §7). Config
``{"id": "diagscale", "cols": bool, "rows": bool}`` (both keys required, at least one
true): whether a column vector ``c`` (C entries) and a row vector ``r`` (R entries) are
stored. Blobs: ``c`` first when present, then ``r`` when present; each is its entries as
little-endian IEEE binary16, exactly 2 bytes per entry, every entry finite, > 0 and
normal (exponent field 1..30, sign 0). The array handed to the next stage (and decoded
from it) is float32 of the same shape. Decoding of element (i, j) from the next stage's
value ``y``::

    C_j = float32(c_j), R_i = float32(r_i)          (binary16 -> binary32: exact)
    t = fl32(y · C_j)          (or t = y without c)  binary32 multiply, nearest-even
    u = fl32(t · R_i)          (or u = t without r)  a second, separate multiply: no FMA,
                                                     never c_j·r_i first
    x = clamp to ±M_dtype, convert to the tensor dtype (affine's steps 4–5)

A NaN in ``y`` is a decode error (a conforming encoder never writes one); ±inf and
overflow clamp to ±M. Rows ``a..b`` need rows ``a..b`` of the next stage (identity
``input_rows``) and both vectors (read whole: 2 bytes per row/column).

Encoder input (how a packer passes the multipliers): they are *encode-only* parameters
of the codec, like the video codecs' ``threads``: given to the constructor (so also as
keys of the config handed to ``encode_tensor``), kept on the instance and **never
written to the stored config** — the stored config is closed (``cols``/``rows`` only), the
vectors live in the blobs. The encode config is::

    {"id": "diagscale", "col_scale": c, "row_scale": r}

``c`` (length C) and ``r`` (length R) are 1-D arrays of the factors **decoding multiplies
by**, in this stage's own row order (the tensor's rows as readers see them, unless a
``rowperm`` stage comes before this one in the pipeline; its rows are then the permuted
ones). Either may be omitted or None (``cols``/``rows`` then false; at least one must be
given; an explicit ``"cols": True`` without ``col_scale`` is refused at encode). For an
activation-aware coding with importance ``s_j`` (column j's weights should get ``s_j``
times less error), pass ``c_j = 1/s_j``. The encoder rounds ``c`` and ``r`` to binary16
(nearest-even) first and refuses values whose rounding is not a finite, positive, normal
binary16 (about 6.1e-5 to 65504: normalise the vector if needed), then codes
``y = float32(x / (c16_j · r16_i))`` in float64 (the product of two binary16 values is exact
in float64, so that is one rounding to float64 and one to float32): decoding multiplies
by the very values the encoder divided by. ``DiagScales`` holds one tensor's vectors
already rounded (what ``Policy.diagscale`` stores) and builds that config.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import xxhash

from llmc_format.codecs.base import ArrayArrayCodec, ArraySpec, BlobFetcher, Encoded, Rows
from llmc_format.codecs.f32out import FLOAT_DTYPES, clamp_convert
from llmc_format.errors import CodecError

#: the dtype of the array this stage passes on (and gets back at decode)
STAGE_DTYPE = "float32"
#: how the vectors are stored: IEEE binary16, little-endian
VECTOR_DTYPE = np.dtype("<f2")
#: rows encoded at once (float64 working copy of ~8 MiB)
_ENCODE_ELEMS = 1 << 20


def matrix_shape(shape: Sequence[int]) -> tuple[int, int]:
    """``(R, C) = (shape[0], prod(shape[1:]))``; a 0-d tensor is 1 × 1."""
    if not shape:
        return 1, 1
    return int(shape[0]), math.prod(int(s) for s in shape[1:])


def round_vector(values: Any, n: int | None, what: str, name: str = "") -> np.ndarray:
    """``values`` (n positive factors) rounded to binary16, nearest-even; CodecError unless
    every rounded entry is finite, > 0 and normal, and it is 1-D with exactly ``n`` entries
    (any number when ``n`` is None)."""
    try:
        v = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise CodecError(f"tensor {name!r}: diagscale {what} is not an array of numbers") from None
    if v.ndim != 1 or (n is not None and v.shape[0] != n):
        raise CodecError(f"tensor {name!r}: diagscale {what} has shape {list(v.shape)}, "
                         f"expected [{'n' if n is None else n}]")
    with np.errstate(over="ignore"):
        h = v.astype(VECTOR_DTYPE)
    bad = ~_normal_positive(h)
    if bad.any():
        i = int(np.argmax(bad))
        raise CodecError(f"tensor {name!r}: diagscale {what}[{i}] = {v[i]!r} is not a "
                         "positive normal binary16 value after rounding (range 6.1e-05 to "
                         f"65504){f'; {int(bad.sum())} such entries' if bad.sum() > 1 else ''}")
    return h


def _normal_positive(h: np.ndarray) -> np.ndarray:
    """Per binary16 entry: sign 0 and exponent field in 1..30 (finite, > 0, normal)."""
    bits = h.view(np.uint16)
    exp = (bits >> 10) & 0x1F
    return ((bits >> 15) == 0) & (exp >= 1) & (exp <= 30)


def parse_vector(blob: bytes, n: int, what: str, name: str) -> np.ndarray:
    """A stored vector blob as float32 (exact widening); CodecError (Decode) unless it is
    exactly ``n`` binary16 entries, each finite, > 0 and normal."""
    if len(blob) != 2 * n:
        raise CodecError(f"tensor {name!r}: diagscale {what} blob is {len(blob)} bytes, "
                         f"expected {2 * n} ({n} binary16 entries)")
    h = np.frombuffer(blob, dtype=VECTOR_DTYPE)
    bad = ~_normal_positive(h)
    if bad.any():
        i = int(np.argmax(bad))
        raise CodecError(f"tensor {name!r}: diagscale {what}[{i}] = {float(h[i])!r} "
                         f"(bits {int(h.view(np.uint16)[i]):#06x}) is not a finite, positive, "
                         "normal binary16 value")
    return h.astype(np.float32)


class DiagScales:
    """One tensor's multipliers as the packer gives them: ``cols`` (C,) and/or ``rows``
    (R,), the factors decoding multiplies by, rounded to binary16 here (once).

    ``repr`` is a digest of the rounded values, so a pack fingerprint (``pack --resume``)
    that records a policy holding these tells different vectors apart.
    """

    __slots__ = ("cols", "rows")

    def __init__(self, cols: Any = None, rows: Any = None) -> None:
        if cols is None and rows is None:
            raise CodecError("diagscale: give a column vector, a row vector or both")
        self.cols = None if cols is None else round_vector(cols, None, "col_scale")
        self.rows = None if rows is None else round_vector(rows, None, "row_scale")
        for v in (self.cols, self.rows):
            if v is not None:
                v.flags.writeable = False

    @classmethod
    def of(cls, value: Any) -> DiagScales:
        """A ``DiagScales`` from itself or a ``(cols, rows)`` pair (either may be None)."""
        if isinstance(value, DiagScales):
            return value
        try:
            cols, rows = value
        except (TypeError, ValueError):
            raise CodecError("diagscale: give (col_scale, row_scale) per tensor, either "
                             f"may be None; got {type(value).__name__}") from None
        return cls(cols, rows)

    @classmethod
    def by_name(cls, mapping: Any) -> dict[str, DiagScales]:
        """``{tensor name: DiagScales}`` from a mapping of ``DiagScales`` or pairs (what
        ``Policy.diagscale`` and ``PackOptions.diagscale`` hold); CodecError if one is bad."""
        return {str(k): cls.of(v) for k, v in dict(mapping).items()}

    def check_shape(self, shape: Sequence[int], name: str) -> None:
        """CodecError unless the vectors fit the tensor of ``shape`` (C columns, R rows)."""
        r, c = matrix_shape(shape)
        for what, v, n in (("col_scale", self.cols, c), ("row_scale", self.rows, r)):
            if v is not None and v.shape[0] != n:
                raise CodecError(f"tensor {name!r}: diagscale {what} has {v.shape[0]} entries, "
                                 f"the tensor {list(shape)} has {n}")

    def stage_config(self) -> dict[str, Any]:
        """The encode config of the stage (the vectors as encode-only keys)."""
        return {"id": DiagScaleCodec.codec_id, "col_scale": self.cols, "row_scale": self.rows}

    def apply(self, array: np.ndarray) -> np.ndarray:
        """What the stage hands the next one: ``float32(x / (c_j · r_i))``."""
        return _divide(np.asarray(array), self.cols, self.rows)

    def __repr__(self) -> str:
        h = xxhash.xxh3_64()
        for v in (self.cols, self.rows):
            h.update(b"-" if v is None else v.tobytes() + b"|")
        return (f"DiagScales(cols={None if self.cols is None else len(self.cols)}, "
                f"rows={None if self.rows is None else len(self.rows)}, xxh3={h.hexdigest()})")


def _divide(x: np.ndarray, cols: np.ndarray | None, rows: np.ndarray | None,
            name: str = "") -> np.ndarray:
    """``float32(x / (c_j · r_i))`` over the matrix view, in float64, in row blocks."""
    shape = x.shape
    n_rows, n_cols = matrix_shape(shape)
    m = x.reshape(n_rows, n_cols)
    c64 = None if cols is None else cols.astype(np.float64)[None, :]
    r64 = None if rows is None else rows.astype(np.float64)[:, None]
    out = np.empty((n_rows, n_cols), dtype=np.float32)
    step = max(1, _ENCODE_ELEMS // max(n_cols, 1))
    with np.errstate(over="ignore"):
        for a in range(0, n_rows, step):
            b = min(n_rows, a + step)
            d = np.ones((b - a, 1)) if c64 is None else c64
            if r64 is not None:
                d = d * r64[a:b]  # a product of two binary16 values: exact in float64
            out[a:b] = m[a:b].astype(np.float64) / d
    if not np.isfinite(out).all():
        raise CodecError(f"tensor {name!r}: diagscale: a scaled value is not finite in float32 "
                         "(non-finite weights, or multipliers too small for their weights)")
    return out.reshape(shape)


class DiagScaleCodec(ArrayArrayCodec):
    """Array→array stage: ``x`` -> float32 ``x / (c_j · r_i)``, multipliers in blobs.

    Stored config ``{"id": "diagscale", "cols": bool, "rows": bool}``. Encode-only
    parameters ``col_scale``/``row_scale`` (never stored; see the module docstring for
    the exact meaning and how a packer passes them).
    """

    codec_id: ClassVar[str] = "diagscale"
    required_keys = frozenset({"cols", "rows"})

    def __init__(self, *, cols: bool | None = None, rows: bool | None = None,
                 col_scale: Any = None, row_scale: Any = None) -> None:
        cols = col_scale is not None if cols is None else cols
        rows = row_scale is not None if rows is None else rows
        for key, value in (("cols", cols), ("rows", rows)):
            if not isinstance(value, bool | np.bool_):
                raise CodecError(f"diagscale: {key} must be true or false, got {value!r}")
        if not (cols or rows):
            raise CodecError("diagscale: at least one of cols and rows must be true")
        for key, flag, vec in (("col_scale", cols, col_scale), ("row_scale", rows, row_scale)):
            if vec is not None and not flag:
                raise CodecError(f"diagscale: {key} given but {key[:3]}s is false")
        super().__init__(cols=bool(cols), rows=bool(rows))
        #: encode-only (like a video codec's ``threads``): not in ``params``, never stored
        self.col_scale, self.row_scale = col_scale, row_scale

    def _check_input(self, spec: ArraySpec) -> tuple[int, int]:
        if spec.dtype not in FLOAT_DTYPES:
            raise CodecError(f"tensor {spec.name!r}: diagscale takes float16/bfloat16/float32/"
                             f"float64, not {spec.dtype}")
        if spec.numel < 1:
            raise CodecError(f"tensor {spec.name!r}: diagscale needs a tensor with elements, "
                             f"not shape {list(spec.shape)}")
        return matrix_shape(spec.shape)

    def resolve(self, spec: ArraySpec) -> ArraySpec:
        self._check_input(spec)
        return ArraySpec(STAGE_DTYPE, spec.shape, spec.name)

    @property
    def n_blobs(self) -> int:
        return int(self.params["cols"]) + int(self.params["rows"])

    # -- encode ------------------------------------------------------------------------

    def encode(self, array: np.ndarray, spec: ArraySpec) -> Encoded:
        n_rows, n_cols = self._check_input(spec)
        spec.check(array, what="input")
        name = spec.name
        vectors: list[np.ndarray] = []
        for key, n, vec in (("col_scale", n_cols, self.col_scale),
                            ("row_scale", n_rows, self.row_scale)):
            if self.params[key[:3] + "s"]:
                if vec is None:
                    raise CodecError(f"tensor {name!r}: diagscale {key[:3]}s is true but no "
                                     f"{key} was given to encode with")
                vectors.append(round_vector(vec, n, key, name))
        cols = vectors[0] if self.params["cols"] else None
        rows = vectors[-1] if self.params["rows"] else None
        y = _divide(array, cols, rows, name)
        info: dict[str, Any] = {"params_bytes": 2 * sum(v.size for v in vectors)}
        for key, v in (("col_scale", cols), ("row_scale", rows)):
            if v is not None:
                info[f"{key}_min"], info[f"{key}_max"] = float(v.min()), float(v.max())
        return Encoded(blobs=[v.tobytes() for v in vectors], config=self.get_config(),
                       array=y, info=info)

    # -- decode ------------------------------------------------------------------------

    def vectors(self, fetch: BlobFetcher, n_blobs: int, spec: ArraySpec
                ) -> tuple[np.ndarray | None, np.ndarray | None]:
        """(column, row) vectors as float32 from this stage's blobs (None where absent)."""
        n_rows, n_cols = self._check_input(spec)
        if n_blobs != self.n_blobs:
            raise CodecError(f"tensor {spec.name!r}: diagscale stage needs {self.n_blobs} "
                             f"blob(s), has {n_blobs}")
        cols = parse_vector(fetch(0), n_cols, "column", spec.name) if self.params["cols"] else None
        rows = (parse_vector(fetch(self.n_blobs - 1), n_rows, "row", spec.name)
                if self.params["rows"] else None)
        return cols, rows

    def decode(self, array: np.ndarray, fetch: BlobFetcher, n_blobs: int, spec: ArraySpec,
               rows: Rows | None = None) -> np.ndarray:
        """Rows ``rows`` of the tensor from the same rows of the next stage's float32."""
        n_rows, n_cols = self._check_input(spec)
        cvec, rvec = self.vectors(fetch, n_blobs, spec)
        a, b = (0, n_rows) if rows is None else rows
        ArraySpec(STAGE_DTYPE, spec.shape, spec.name).check(array, rows, what="scaled values")
        y = array.reshape(b - a, n_cols)
        # one new float32 array, then in place: t = fl32(y·C_j); u = fl32(t·R_i); clamp
        with np.errstate(over="ignore"):
            if cvec is not None:
                out = np.multiply(y, cvec[None, :], dtype=np.float32)
                if rvec is not None:
                    np.multiply(out, rvec[a:b, None], out=out)
            else:
                assert rvec is not None
                out = np.multiply(y, rvec[a:b, None], dtype=np.float32)
        if out.size and np.isnan(np.max(out)):  # max propagates NaN: one pass, no mask
            raise CodecError(f"tensor {spec.name!r}: diagscale got NaN from the next stage")
        return clamp_convert(out, spec.dtype).reshape(spec.rows_shape(rows))

    def raw_record(self, spec: ArraySpec, fetch: BlobFetcher, n_blobs: int) -> dict[str, Any]:
        """``extract --raw``: the stored multipliers (binary16 values, exact in JSON) and
        the decoding steps (spec/FORMAT.md §7.9), so numpy alone applies them."""
        cvec, rvec = self.vectors(fetch, n_blobs, spec)
        return {
            "stage": self.codec_id,
            "cols": self.params["cols"], "rows": self.params["rows"],
            "col_scale": None if cvec is None else cvec.astype(np.float64).tolist(),
            "row_scale": None if rvec is None else rvec.astype(np.float64).tolist(),
            "formula": DIAGSCALE_FORMULA,
            "reference": "spec/FORMAT.md §7.9 (diagscale)",
        }


#: ``extract --raw``: the decoding, restated from spec/FORMAT.md §7.9 so a sidecar stands alone
DIAGSCALE_FORMULA = (
    "Input: the float32 values y of the stage after this one (the tensor viewed as a matrix "
    "of R = shape[0] rows and C = prod(shape[1:]) columns). For element (i, j): "
    "t = fl32(y * float32(col_scale[j])) if cols, else t = y; u = fl32(t * float32(row_scale[i])) "
    "if rows, else u = t (IEEE binary32 multiplications, round-to-nearest-even, in this order, "
    "not fused); v = min(max(u, -M), M) with M = the largest finite value of the tensor dtype "
    "(float32 max for float32/float64); x = v rounded to the tensor dtype (nearest-even)."
)
