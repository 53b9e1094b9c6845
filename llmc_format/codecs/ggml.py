"""The ``ggml`` codec: a GGUF tensor's own blocks, stored bit-exactly and entropy-coded.

A quantized GGUF tensor (Q4_1, Q8_0, K-quants, IQ types...) is not a float array: its
bytes are ggml blocks (``ggml_types``), and the only lossless way to keep it is to keep
those bytes. Decoding returns the tensor's *values* (dequantized, float32 for quantized
types; the element type itself for F16/BF16/F32/...), so every reader of the archive
(``safe_open``, unpack to safetensors, lossy re-coding) sees floats, while
``decode_blocks`` returns the bytes themselves (unpack to GGUF, byte for byte).

Why split streams: a block mixes float16 scales (smooth across neighbouring blocks,
entropy ~8-10 of 16 bits) with packed quants (near-uniform). Coded together an entropy
coder sees neither; so each block is cut into its fields (scale, min, high bits, quants),
field i of every block of a blob forms stream i, and each stream is coded with the
``exact`` codec's chunk coder (bit rotation + byte planes + zstd-Huffman, or raw when
that does not pay). Measured on SmolLM2-135M Q4_1 (``python -m tools.bench_gguf_native``,
docs/results/gguf_native.md): Q4_1 scales/mins shrink to 0.57/0.50 of their bytes, its
packed quants to 0.967, the Q8_0 embedding's scales to 0.64 and quants to 0.937 — the
tensor data to 0.894 of its GGUF size, the whole archive to 0.887 of the file. For
float16 scales both rotations 0 and 1 are tried per chunk and the smaller kept (the
block layouts do not say which 2-byte fields are floats).

Stored format (layout 1) — normative; see spec/FORMAT.md §7.6
=====================================================================
Config::

    {"id": "ggml", "layout": 1, "type": T, "fields": [[n_0, w_0], ...],
     "rows_per_blob": R, "chunk_bytes": B}

``type`` is a ggml type name (``ggml_types.TYPES``: block size ``bs``, type size ``ts``,
decoded dtype). The tensor entry's dtype must be the type's decoded dtype and its shape
(numpy order: GGUF's ``ne`` reversed) must have a last dimension divisible by ``bs``.
Rows are the first axis; a row of W elements is W/bs blocks, ``row_bytes`` = W/bs·ts
bytes. ``fields``: the block is cut into consecutive fields of n_i bytes
(sum n_i = ts), each made of n_i/w_i little-endian elements of w_i ∈ {1, 2, 4, 8} bytes.
Blob j holds rows [j·R, min((j+1)·R, rows)); there are ceil(rows/R) blobs (none for an
empty tensor). For a blob of nb blocks (in row-major order)::

    u32 len_0, ..., u32 len_{F-1}      (little-endian, F = number of fields)
    payload_0, ..., payload_{F-1}      back to back; the blob is 4F + sum(len_i) bytes

Payload i is one chunk of the ``exact`` codec's layout 1 (rotation byte, plane modes and
lengths, planes) holding nb·n_i/w_i elements of w_i bytes: the bytes [off_i, off_i + n_i)
of every block, in block order. Reassembling the fields gives the blocks; the blocks of
rows [a, b) are the tensor's GGUF bytes for those rows. ``chunk_bytes`` is the encoder's
target only. A decoder rejects wrong counts, lengths and fields, as ``exact`` does.
"""

from __future__ import annotations

import struct
from typing import Any, ClassVar

import numpy as np

from llmc_format.codecs.base import ArrayBytesCodec, ArraySpec, BlobFetcher, Encoded, Rows
from llmc_format.codecs.exact import ROTATION, decode_chunk_into, encode_chunk
from llmc_format.codecs.ggml_types import TYPES, GgmlType, dequantize, ggml_type, has_nan
from llmc_format.errors import CodecError

LAYOUT_VERSION = 1
DEFAULT_CHUNK_BYTES = 1 << 20
MAX_CHUNK_BYTES = 1 << 30
_UINT = {1: np.dtype("<u1"), 2: np.dtype("<u2"), 4: np.dtype("<u4"), 8: np.dtype("<u8")}
_CONFIG_KEYS = frozenset({"id", "layout", "type", "fields", "rows_per_blob", "chunk_bytes"})


def _is_int(x: object) -> bool:
    return isinstance(x, int | np.integer) and not isinstance(x, bool | np.bool_)


def geometry(t: GgmlType, shape: tuple[int, ...], where: str) -> tuple[int, int]:
    """(rows, row_bytes) of a tensor of type ``t`` and numpy-order ``shape``."""
    if not shape:
        if t.block_size != 1:
            raise CodecError(f"{where}: a 0-d tensor cannot be of blocked type {t.name}")
        return 1, t.type_size
    if shape[-1] % t.block_size:
        raise CodecError(f"{where}: last dimension {shape[-1]} is not a multiple of "
                         f"{t.name}'s block of {t.block_size}")
    rows = shape[0]
    per_row = 1
    for d in shape[1:]:
        per_row *= d
    return rows, per_row // t.block_size * t.type_size


class GgmlCodec(ArrayBytesCodec):
    """Lossless storage of ggml blocks, stream-split and entropy-coded (layout 1 above)."""

    codec_id: ClassVar[str] = "ggml"
    lossless = True
    selectable = False  # holds a GGUF source's own blocks: chosen by the source, not --codec
    #: stored configs (FORMAT.md §7.6): chunk_bytes is the encoder's target only
    required_keys = frozenset({"layout", "type", "fields", "rows_per_blob"})
    optional_keys = frozenset({"chunk_bytes"})

    def __init__(self, type: str, chunk_bytes: int = DEFAULT_CHUNK_BYTES,
                 layout: int | None = None, fields: list[list[int]] | None = None,
                 rows_per_blob: int | None = None) -> None:
        self.type = ggml_type(type, "ggml codec")
        if not _is_int(chunk_bytes) or not 1 <= chunk_bytes <= MAX_CHUNK_BYTES:
            raise CodecError(f"ggml: chunk_bytes must be an int in [1, {MAX_CHUNK_BYTES}], "
                             f"got {chunk_bytes!r}")
        params: dict[str, Any] = {"type": type, "chunk_bytes": int(chunk_bytes)}
        if layout is not None:
            params["layout"] = layout
        if fields is not None:
            params["fields"] = fields
        if rows_per_blob is not None:
            params["rows_per_blob"] = rows_per_blob
        super().__init__(**params)

    @classmethod
    def label(cls, config: dict[str, Any]) -> str:
        return f"{cls.codec_id}:{config.get('type')}"  # ggml:Q4_1

    @classmethod
    def kept_encoding(cls, config: dict[str, Any]) -> dict[str, Any] | None:
        return {"id": cls.codec_id, "type": config.get("type")}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> GgmlCodec:
        unknown = set(config) - _CONFIG_KEYS
        if unknown:
            raise CodecError(f"bad config for codec 'ggml': unknown keys {sorted(unknown)}")
        if "type" not in config:
            raise CodecError("bad config for codec 'ggml': no 'type'")
        return cls(**{k: v for k, v in config.items() if k != "id"})

    @classmethod
    def digest_portable(cls, config: dict[str, Any], values: np.ndarray) -> bool:
        """FORMAT.md §7.6, digest rule: no ``digest.decoded`` for a quantized type whose
        values hold any NaN. Which NaN an operation on two NaNs returns (Q4_1 with NaN
        ``d`` and ``m``) is implementation-defined — numpy itself returns ``d·q``'s for a
        tensor of several blocks and ``m``'s for a single block — so such a digest would
        pin one implementation. Any NaN, not only two-NaN blocks: one check on values the
        writer holds anyway, which any other writer reproduces without a per-type analysis
        of which fields meet in one operation. Plain types reinterpret bytes: portable."""
        t = TYPES.get(config.get("type"))  # type: ignore[arg-type]
        return t is None or t.plain or not has_nan(values)

    # -- encode -----------------------------------------------------------------------

    def _check_spec(self, spec: ArraySpec) -> tuple[int, int]:
        where = f"tensor {spec.name!r}"
        if spec.dtype != self.type.dtype:
            raise CodecError(f"{where}: ggml type {self.type.name} decodes to {self.type.dtype}, "
                             f"but the tensor is {spec.dtype}")
        return geometry(self.type, tuple(spec.shape), where)

    def encode(self, array: np.ndarray, spec: ArraySpec) -> Encoded:
        """Plain types only (F16, BF16, F32...): their values are their blocks."""
        if not self.type.plain:
            raise CodecError(f"tensor {spec.name!r}: ggml type {self.type.name} is stored from "
                             "its source blocks (encode_blocks), not from float values")
        spec.check(array, what="input")
        return self.encode_blocks(np.ascontiguousarray(array).reshape(-1).view(np.uint8), spec)

    def encode_blocks(self, raw: np.ndarray, spec: ArraySpec) -> Encoded:
        """Encode the tensor's GGUF bytes ``raw`` (uint8, any shape) for the values ``spec``."""
        rows, row_bytes = self._check_spec(spec)
        flat = np.ascontiguousarray(raw).reshape(-1).view(np.uint8)
        if flat.size != rows * row_bytes:
            raise CodecError(f"tensor {spec.name!r}: {flat.size} bytes of {self.type.name}, "
                             f"expected {rows * row_bytes} for shape {list(spec.shape)}")
        fields = [list(f) for f in self.type.fields]
        r = max(1, self.params["chunk_bytes"] // max(row_bytes, 1)) if rows and row_bytes else 0
        r = min(r, rows)
        blobs = []
        if rows and row_bytes:
            blocks = flat.reshape(-1, self.type.type_size)
            per_row = row_bytes // self.type.type_size
            for start in range(0, rows, r):
                stop = min(start + r, rows)
                blobs.append(self._encode_blob(blocks[start * per_row:stop * per_row], fields))
        config = {"id": self.codec_id, "layout": LAYOUT_VERSION, "type": self.type.name,
                  "fields": fields, "rows_per_blob": int(r),
                  "chunk_bytes": self.params["chunk_bytes"]}
        stored = sum(len(b) for b in blobs)
        return Encoded(blobs=blobs, config=config,
                       info={"raw_bytes": int(flat.size), "stored_bytes": stored,
                             "ggml_type": self.type.name})

    def _encode_blob(self, blocks: np.ndarray, fields: list[list[int]]) -> bytes:
        heads, payloads = [], []
        off = 0
        for n, w in fields:
            u = np.ascontiguousarray(blocks[:, off:off + n]).reshape(-1).view(_UINT[w])
            off += n
            payload = min((encode_chunk(u, rot) for rot in self._rotations(w)), key=len)
            heads.append(struct.pack("<I", len(payload)))
            payloads.append(payload)
        return b"".join(heads + payloads)

    def _rotations(self, width: int) -> tuple[int, ...]:
        """Rotations worth trying for a field: the float layout's for plain types; for a
        quantized type's wide fields (float16/32 scales, or integer sums) both 0 and the
        float one, keeping the smaller (the field's kind is not in the type table)."""
        if self.type.plain:
            return (ROTATION.get(self.type.dtype, 0),)
        if width == 1:
            return (0,)
        return (0, 1 if width == 2 else 3)

    # -- decode -----------------------------------------------------------------------

    def _layout(self, spec: ArraySpec, n_blobs: int) -> tuple[int, int, int, list[tuple[int, int]]]:
        """Validate the stored config; (rows, row_bytes, rows_per_blob, fields)."""
        where = f"tensor {spec.name!r}"
        if self.params.get("layout") != LAYOUT_VERSION:
            raise CodecError(f"{where}: ggml layout {self.params.get('layout')!r} is not "
                             f"supported (this reader knows layout {LAYOUT_VERSION})")
        rows, row_bytes = self._check_spec(spec)
        fields = self.params.get("fields")
        ok = isinstance(fields, list) and 0 < len(fields) <= self.type.type_size and all(
            isinstance(f, list) and len(f) == 2 and _is_int(f[0]) and _is_int(f[1])
            and f[1] in _UINT and f[0] > 0 and f[0] % f[1] == 0 for f in fields)
        if not ok or sum(f[0] for f in fields) != self.type.type_size:
            raise CodecError(f"{where}: bad ggml fields {fields!r} for {self.type.name} "
                             f"({self.type.type_size}-byte blocks)")
        r = self.params.get("rows_per_blob")
        empty = rows * row_bytes == 0
        if not _is_int(r) or (r == 0) != empty or r < 0 or r > max(rows, 1):
            raise CodecError(f"{where}: bad ggml rows_per_blob {r!r} for {rows} rows")
        want = 0 if empty else -(-rows // r)
        if n_blobs != want:
            raise CodecError(f"{where}: {n_blobs} blobs stored, {want} expected")
        return rows, row_bytes, int(r), [(int(n), int(w)) for n, w in fields]

    def decode_blocks(self, fetch: BlobFetcher, n_blobs: int, spec: ArraySpec,
                      rows: Rows | None = None) -> np.ndarray:
        """The GGUF bytes of rows [a, b) (all rows by default): uint8 (b - a, row_bytes)."""
        where = f"tensor {spec.name!r}"
        n_rows, row_bytes, r, fields = self._layout(spec, n_blobs)
        a, b = (0, n_rows) if rows is None else rows
        if not (_is_int(a) and _is_int(b) and 0 <= a <= b <= n_rows):
            raise CodecError(f"{where}: rows {rows!r} out of range 0:{n_rows}")
        out = np.empty((b - a, row_bytes), np.uint8)
        if b == a or row_bytes == 0:
            return out
        for j in range(a // r, (b - 1) // r + 1):
            lo, hi = j * r, min((j + 1) * r, n_rows)
            blob = fetch(j)
            if not isinstance(blob, bytes | bytearray | memoryview):
                raise CodecError(f"{where}: blob {j} is {type(blob).__name__}, not bytes")
            part = self._decode_blob(blob, (hi - lo) * row_bytes // self.type.type_size,
                                     fields, f"{where}, blob {j}")
            s, e = max(lo, a), min(hi, b)
            out[s - a:e - a] = part.reshape(hi - lo, row_bytes)[s - lo:e - lo]
        return out

    def _decode_blob(self, blob: bytes, nb: int, fields: list[tuple[int, int]],
                     where: str) -> np.ndarray:
        view = memoryview(blob).cast("B")
        head = 4 * len(fields)
        if len(view) < head:
            raise CodecError(f"{where}: blob of {len(view)} bytes is shorter than its header")
        lengths = struct.unpack_from(f"<{len(fields)}I", view, 0)
        if head + sum(lengths) != len(view):
            raise CodecError(f"{where}: blob is {len(view)} bytes, its header describes "
                             f"{head + sum(lengths)}")
        blocks = np.empty((nb, self.type.type_size), np.uint8)
        pos, off = head, 0
        for i, ((n, w), length) in enumerate(zip(fields, lengths, strict=True)):
            stream = np.empty(nb * n // w, _UINT[w])
            decode_chunk_into(view[pos:pos + length], stream, f"{where}, field {i}")
            blocks[:, off:off + n] = stream.view(np.uint8).reshape(nb, n)
            pos += length
            off += n
        return blocks

    def decode(self, fetch: BlobFetcher, n_blobs: int, spec: ArraySpec,
               rows: Rows | None = None) -> np.ndarray:
        """The values of rows [a, b): dequantized (quantized types) or reinterpreted."""
        raw = self.decode_blocks(fetch, n_blobs, spec, rows)
        shape = spec.rows_shape(rows)
        return dequantize(raw, self.type, shape, f"tensor {spec.name!r}")
