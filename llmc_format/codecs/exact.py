"""The ``exact`` codec: lossless, bit-exact storage of a tensor of any llmc dtype.

Why not plain zstd: in a float weight the exponent bits are highly predictable (a few
dozen values carry almost all the mass: ~2.6 bits of entropy in bfloat16's 8) while the
low mantissa bits are noise. Mixed in one byte stream, an LZ coder sees neither. So, as
ZipNN does, each element's bits are *rotated* so that the predictable bits share a byte,
the tensor is split into byte planes (all byte 0s, all byte 1s, ...), and each plane is
entropy-coded on its own — or stored raw when coding does not help. The entropy coder is
zstd's Huffman literal coding, with the LZ matcher starved (see "Encoder") because random
short matches in a noisy exponent stream cost more than they save. Measured (MiniLM-L6
as bf16, ``tools/bench_lossless.py``): ratio 1.512 vs 1.282 for zstd-3, 1.407 for byte
planes + zstd-3 and 1.504 for zipnn 0.5.4. zstd's optimal parser (level 19) gains
nothing over this at 1/500th of the speed; an ANS coder (constriction 0.5.0, the
maintained entropy-coding library on PyPI), with one static model per 4 MiB, spent 2.71
bits per bf16 exponent (zstd here: 2.64, thanks to a Huffman table per 128 KiB block)
and decoded at 42 MB/s, against ~1.5 GB/s per plane for zstd's Huffman decoder; and a
standard zstd frame lets this format be specified by reference to RFC 8878.

Why a rotation of 3 for bfloat16 (ZipNN uses 1): bfloat16's top three exponent bits are
nearly constant in weights (|w| in [2^-31, 1)), so the Huffman-coded byte is better spent
on the six low exponent bits plus the two top mantissa bits, whose distribution depends
on the exponent (a Gaussian's density falls within an octave). The other byte then holds
5 mantissa bits, the sign and 2 near-constant exponent bits: ~6 bits, which Huffman
codes too. Measured on MiniLM bf16: rotation 1 -> 1.5035, 2 -> 1.510, 3 -> 1.512,
4 -> 1.511; choosing the best rotation per chunk gained only 0.0002.

Stored format (layout version 1) — normative
============================================
Stored config (plain data, the index's per-tensor pipeline entry)::

    {"id": "exact", "layout": 1, "chunk_elems": C, "chunk_bytes": B}

- ``layout`` (int): version of the blob layout below. A decoder rejects other values.
- ``chunk_elems`` (int): elements per blob; 1 <= C <= 2^30 when the tensor has elements,
  C = 0 when it has none. ``chunk_bytes`` (int, optional) is the encoder's target only,
  kept so that re-encoding with the stored config reproduces the file; decoders ignore it.
- Any other key is an error (a future layout gets a new ``layout`` number).

The tensor (dtype and shape from the index entry) is flattened in row-major (C) order to
N elements; "rows" are the first axis, W = N / rows elements each (a 0-d tensor is one
row of one element). Blob i (0-based) holds elements [i·C, min((i+1)·C, N)); there are
exactly ceil(N / C) blobs, and none when N = 0 (any zero dimension). Rows [a, b) are
elements [a·W, b·W); for a < b a reader needs only blobs floor(a·W / C) through
floor((b·W − 1) / C).

Blob layout, for a blob of n elements of a dtype of k bytes per element (k = 1, 2, 4, 8;
w = 8k bits)::

    offset 0         u8   r       rotation, 0 <= r < w
    offset 1 + 5i    u8   mode_i  for each plane i = 0 .. k-1: 0 = raw, 1 = zstd
    offset 2 + 5i    u32  len_i   (little-endian) byte length of plane i's payload
    offset 1 + 5k    payload_0, payload_1, ..., payload_{k-1}, back to back

The blob is exactly 1 + 5k + sum(len_i) bytes long. Payload i decodes to plane i, a
string of exactly n bytes:

- mode 0 (raw): the payload *is* the plane; len_i = n.
- mode 1 (zstd): the payload is exactly one zstd frame (RFC 8878) with
  Frame_Content_Size present and equal to n, no dictionary, nothing after it (no second
  frame, no skippable frame); it decompresses to the plane. A checksum, if present, is
  verified. Its Window_Size is at most max(n, 2^17) bytes (a larger one is refused, so
  every reader accepts the same frames and none needs more than 128 KiB beyond the
  plane); the encoder's window is 128 KiB. No other zstd parameter matters.

Reassembly: element j's stored value is the unsigned little-endian integer
s_j = sum over i of plane_i[j] · 2^(8i), and its original bits (as a w-bit unsigned
integer, little-endian in memory like every llmc dtype) are the right rotation

    x_j = ((s_j >> r) | (s_j << (w − r))) mod 2^w        (x_j = s_j when r = 0)

i.e. the encoder stored s_j = rotl_w(x_j, r) = ((x_j << r) | (x_j >> (w − r))) mod 2^w.
For dtype ``bool`` every reassembled byte must be 0 or 1.

A decoder rejects (``CodecError``): a wrong blob count, a blob shorter than its header or
whose length disagrees with the header, r >= w, an unknown mode, a raw plane whose length
is not n, a zstd payload that is not one complete frame declaring n bytes of content or
that fails to decode, and bool bytes other than 0/1.

Encoder (informative)
---------------------
Chunks: C = R·W with R = max(1, floor(chunk_bytes / (W·k))) rows when a row fits in
``chunk_bytes`` (so row-range reads touch whole blobs), else C = floor(chunk_bytes / k)
(a huge row is split across blobs); C is then capped at N. Default ``chunk_bytes`` is
1 MiB: on MiniLM bf16 256 KiB / 1 MiB / 4 MiB / 16 MiB gave ratios 1.5119 / 1.5122 /
1.5123 / 1.5123 and equal speeds within noise, while smaller blobs mean cheaper
row-range reads and more chunks to decode in parallel.

Rotation by dtype: bfloat16 3, float16 1, float32 3, float64 6 (the same idea: the
low 6 exponent bits and top 2 mantissa bits in one byte; measured on Gaussian weights,
rotation 6 beats 1 by 2.6%), all other dtypes 0 (integers are plain byte planes;
one-byte types are one plane whose Huffman coding needs no transform). Each plane is
compressed as one zstd frame with window_log=17, hash_log=6, min_match=7,
strategy=fast (1), content size written, no checksum, no dictionary id; a plane whose
frame is not shorter than n bytes is stored raw. The tiny hash table is the point: with
the default one, the fast matcher finds "matches" in noisy exponent data that cost more
than Huffman-coding the same bytes (2.78 vs 2.64 bits per bf16 exponent). Chunks are
coded on up to ``threads`` threads (zstd and numpy release the GIL); zstd's own
multithreading is not used, since chunks already give parallelism and keep every blob
independent. The output depends only on the input and the zstd library version, not on
the thread count.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, ClassVar

import numpy as np
import zstandard

from llmc_format import dtypes
from llmc_format.codecs.base import ArrayBytesCodec, ArraySpec, BlobFetcher, Encoded, Rows
from llmc_format.container import layout
from llmc_format.errors import CodecError, LlmcError
from llmc_format.runtime import default_jobs

LAYOUT_VERSION = 1
MODE_RAW = 0
MODE_ZSTD = 1
DEFAULT_CHUNK_BYTES = 1 << 20
#: Encoder and decoder limit on one blob's elements: keeps len_i within u32 and a hostile
#: config from declaring chunks far larger than any sane encoder writes.
MAX_CHUNK_ELEMS = 1 << 30
#: Encoder-side bounds of ``chunk_bytes``.
MIN_CHUNK_BYTES = 1
MAX_CHUNK_BYTES = 1 << 30

#: Encoder's rotation per dtype (the decoder reads it from each blob).
ROTATION: dict[str, int] = {"bfloat16": 3, "float16": 1, "float32": 3, "float64": 6}

_UINT = {1: np.dtype("<u1"), 2: np.dtype("<u2"), 4: np.dtype("<u4"), 8: np.dtype("<u8")}
_PLANE = struct.Struct("<BI")
_CONFIG_KEYS = frozenset({"layout", "chunk_elems", "chunk_bytes"})
_ZSTD_PARAMS = zstandard.ZstdCompressionParameters(
    window_log=17, hash_log=6, min_match=7, strategy=zstandard.STRATEGY_FAST,
    write_content_size=True, write_checksum=False, write_dict_id=False,
)
_local = threading.local()


def _compressor() -> zstandard.ZstdCompressor:
    """A per-thread compressor: zstd contexts are not thread-safe, and cheap to keep."""
    c = getattr(_local, "cctx", None)
    if c is None:
        c = _local.cctx = zstandard.ZstdCompressor(compression_params=_ZSTD_PARAMS)
    return c


def _decompressor() -> zstandard.ZstdDecompressor:
    d = getattr(_local, "dctx", None)
    if d is None:
        d = _local.dctx = zstandard.ZstdDecompressor()
    return d


def _is_int(x: object) -> bool:
    return isinstance(x, int | np.integer) and not isinstance(x, bool | np.bool_)


# ---------------------------------------------------------------------------------------
# One chunk


def _rotate_left(u: np.ndarray, r: int) -> np.ndarray:
    """rotl_w of each w-bit unsigned element (a new array; ``u`` is the caller's data)."""
    if r == 0:
        return u
    w = 8 * u.itemsize
    out = np.left_shift(u, u.dtype.type(r))
    out |= np.right_shift(u, u.dtype.type(w - r))
    return out


def _rotate_right_inplace(u: np.ndarray, r: int) -> None:
    """rotr_w in place: the decoder's inverse of ``_rotate_left``."""
    if r == 0:
        return
    w = 8 * u.itemsize
    low = np.right_shift(u, u.dtype.type(r))
    np.left_shift(u, u.dtype.type(w - r), out=u)
    u |= low


def encode_chunk(u: np.ndarray, r: int) -> bytes:
    """One blob from a contiguous 1-D unsigned view of n elements (layout 1)."""
    k = u.itemsize
    planes = _rotate_left(u, r).view(np.uint8).reshape(-1, k)
    head = [bytes([r])]
    payloads: list[bytes] = []
    cctx = _compressor()
    for i in range(k):
        plane = np.ascontiguousarray(planes[:, i])
        frame = cctx.compress(plane)
        if len(frame) < plane.size:
            mode, data = MODE_ZSTD, frame
        else:
            mode, data = MODE_RAW, plane.tobytes()
        head.append(_PLANE.pack(mode, len(data)))
        payloads.append(data)
    return b"".join(head + payloads)


def _plane(payload: memoryview, mode: int, n: int, where: str) -> bytes | memoryview:
    """Decode one plane's payload to exactly ``n`` bytes, allocating no more than that."""
    if mode == MODE_RAW:
        if len(payload) != n:
            raise CodecError(f"{where}: raw plane holds {len(payload)} bytes, expected {n}")
        return payload
    if mode != MODE_ZSTD:
        raise CodecError(f"{where}: unknown plane mode {mode}")
    try:
        params = zstandard.get_frame_parameters(payload)
    except zstandard.ZstdError as exc:
        raise CodecError(f"{where}: bad zstd frame header ({exc})") from None
    if params.content_size != n:
        raise CodecError(
            f"{where}: zstd frame declares {params.content_size} bytes of content, expected {n}"
        )
    if params.dict_id != 0:
        raise CodecError(f"{where}: zstd frame needs dictionary {params.dict_id}")
    if not layout.zstd_window_ok(params.window_size, n):
        raise CodecError(f"{where}: zstd window of {params.window_size} bytes exceeds the "
                         f"format's max({n}, {layout.ZSTD_WINDOW_FLOOR})")
    try:
        data = _decompressor().decompress(payload, max_output_size=n, allow_extra_data=False)
    except zstandard.ZstdError as exc:
        raise CodecError(f"{where}: zstd payload does not decode ({exc})") from None
    if len(data) != n:
        raise CodecError(f"{where}: zstd plane decoded to {len(data)} bytes, expected {n}")
    return data


def decode_chunk_into(blob: bytes, out: np.ndarray, where: str) -> None:
    """Decode one blob into ``out``, a contiguous 1-D unsigned array of its n elements."""
    n, k = out.size, out.itemsize
    view = memoryview(blob).cast("B")
    head = 1 + 5 * k
    if len(view) < head:
        raise CodecError(f"{where}: blob of {len(view)} bytes is shorter than its header")
    r = view[0]
    if r >= 8 * k:
        raise CodecError(f"{where}: rotation {r} out of range for {8 * k}-bit elements")
    entries = [_PLANE.unpack_from(view, 1 + 5 * i) for i in range(k)]
    if head + sum(length for _, length in entries) != len(view):
        raise CodecError(f"{where}: blob is {len(view)} bytes, its header describes "
                         f"{head + sum(length for _, length in entries)}")
    planes = []
    pos = head
    for i, (mode, length) in enumerate(entries):
        plane = _plane(view[pos:pos + length], mode, n, f"{where}, plane {i}")
        planes.append(np.frombuffer(plane, np.uint8))
        pos += length
    if k == 1:
        out[:] = planes[0]
    elif k == 2:  # shift-or is twice as fast as strided byte writes for 16-bit elements
        out[:] = planes[1]
        np.left_shift(out, out.dtype.type(8), out=out)
        np.bitwise_or(out, planes[0], out=out)
    else:  # for 4 and 8 bytes strided writes are as fast or faster (measured)
        grid = out.view(np.uint8).reshape(n, k)
        for i, plane in enumerate(planes):
            grid[:, i] = plane
    _rotate_right_inplace(out, r)


# ---------------------------------------------------------------------------------------
# The codec


class ExactCodec(ArrayBytesCodec):
    """Lossless codec: rotate float bits, split byte planes, Huffman-code each plane.

    Parameters (stored): ``chunk_bytes`` — target raw bytes per blob (default 1 MiB;
    smaller blobs make row-range reads cheaper and parallelize better, larger ones lose
    less to per-frame overhead). ``layout``/``chunk_elems`` are filled in by ``encode``
    and describe the stored tensor. ``threads`` (not stored) — worker threads for the
    chunks of one tensor, default all usable cores; the output does not depend on it.
    """

    codec_id: ClassVar[str] = "exact"
    lossless = True
    required_keys = frozenset({"layout", "chunk_elems"})
    optional_keys = frozenset({"chunk_bytes"})

    def __init__(self, chunk_bytes: int = DEFAULT_CHUNK_BYTES, layout: int | None = None,
                 chunk_elems: int | None = None, *, threads: int | None = None) -> None:
        if not _is_int(chunk_bytes) or not MIN_CHUNK_BYTES <= chunk_bytes <= MAX_CHUNK_BYTES:
            raise CodecError(f"exact: chunk_bytes must be an int in [{MIN_CHUNK_BYTES}, "
                             f"{MAX_CHUNK_BYTES}], got {chunk_bytes!r}")
        params: dict[str, Any] = {"chunk_bytes": int(chunk_bytes)}  # plain int, not numpy
        if layout is not None:
            params["layout"] = layout  # validated when decoding: only then does it matter
        if chunk_elems is not None:
            params["chunk_elems"] = chunk_elems
        super().__init__(**params)
        if threads is not None and (not _is_int(threads) or threads < 1):
            raise CodecError(f"exact: threads must be a positive int, got {threads!r}")
        self.threads = threads or default_jobs()

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ExactCodec:
        unknown = set(config) - _CONFIG_KEYS - {"id"}
        if unknown:
            raise CodecError(f"bad config for codec 'exact': unknown keys {sorted(unknown)}")
        params = {k: v for k, v in config.items() if k != "id"}
        return cls(**params)

    # -- encode -----------------------------------------------------------------------

    def _chunk_elems(self, spec: ArraySpec) -> int:
        """Elements per blob: whole rows when a row fits in ``chunk_bytes``."""
        item = dtypes.itemsize(spec.dtype)
        row = spec.numel // spec.shape[0] if spec.shape else 1
        target = max(1, self.params["chunk_bytes"] // item)
        if row <= target:
            target = (target // row) * row
        return min(target, MAX_CHUNK_ELEMS)

    def encode(self, array: np.ndarray, spec: ArraySpec) -> Encoded:
        spec.check(array, what="input")
        u = np.ascontiguousarray(array).reshape(-1).view(_UINT[array.itemsize])
        if spec.dtype == "bool" and u.size and int(u.max()) > 1:
            raise CodecError(f"tensor {spec.name!r}: bool array holds bytes other than 0/1")
        n = u.size
        c = min(self._chunk_elems(spec), n) if n else 0
        r = ROTATION.get(spec.dtype, 0)
        starts = range(0, n, c) if c else range(0)
        blobs = list(self._map(lambda s: encode_chunk(u[s:s + c], r), starts))
        config = {"id": self.codec_id, "layout": LAYOUT_VERSION, "chunk_elems": int(c),
                  "chunk_bytes": self.params["chunk_bytes"]}
        stored = sum(len(b) for b in blobs)
        return Encoded(blobs=blobs, config=config,
                       info={"raw_bytes": spec.nbytes, "stored_bytes": stored})

    # -- decode -----------------------------------------------------------------------

    def _checked_layout(self, spec: ArraySpec, n_blobs: int) -> int:
        """Validate the stored config against the spec; return ``chunk_elems``."""
        where = f"tensor {spec.name!r}"
        layout = self.params.get("layout")
        c = self.params.get("chunk_elems")
        if layout != LAYOUT_VERSION or not _is_int(layout):
            raise CodecError(f"{where}: exact layout {layout!r} is not supported "
                             f"(this reader knows layout {LAYOUT_VERSION})")
        if not _is_int(c) or not 0 <= c <= MAX_CHUNK_ELEMS:
            raise CodecError(f"{where}: exact chunk_elems {c!r} is not an int in "
                             f"[0, {MAX_CHUNK_ELEMS}]")
        n = spec.numel
        if (c == 0) != (n == 0):
            raise CodecError(f"{where}: chunk_elems {c} does not fit {n} elements")
        want = -(-n // c) if c else 0
        if n_blobs != want:
            raise CodecError(f"{where}: {n_blobs} blobs stored, {want} expected for "
                             f"{n} elements in chunks of {c}")
        return c

    def decode(self, fetch: BlobFetcher, n_blobs: int, spec: ArraySpec,
               rows: Rows | None = None) -> np.ndarray:
        """Rebuild the tensor or its rows [a, b), fetching only the blobs that cover them.

        Memory is bounded by the spec, never by what a blob claims: the output rows, plus per
        blob in flight (at most ``threads`` + 1) its decoded planes and, for a blob only
        partly inside the range, one chunk-sized temporary; a zstd frame is decompressed
        only after its header declared exactly the plane's size.
        """
        where = f"tensor {spec.name!r}"
        try:
            np_dtype = dtypes.to_numpy(spec.dtype)
        except LlmcError as exc:
            raise CodecError(f"{where}: {exc}") from None
        if not all(_is_int(d) and d >= 0 for d in spec.shape):
            raise CodecError(f"{where}: bad shape {spec.shape!r}")
        c = self._checked_layout(spec, n_blobs)
        n_rows = spec.shape[0] if spec.shape else 1
        row = spec.numel // n_rows if n_rows else 0
        a, b = self._checked_rows(rows, n_rows, where)
        shape = spec.rows_shape(None if rows is None else (a, b))
        lo, hi = a * row, b * row
        item = _UINT[np_dtype.itemsize]
        out = np.empty(hi - lo, item)
        if hi > lo:
            def decode_one(i: int, blob: bytes) -> None:
                self._decode_blob(blob, i, c, lo, hi, spec.numel, out, where)
            self._run_decode(fetch, range(lo // c, (hi - 1) // c + 1), decode_one, where)
        if spec.dtype == "bool" and out.size and int(out.max()) > 1:
            raise CodecError(f"{where}: decoded bool bytes other than 0/1")
        return out.view(np_dtype).reshape(shape)

    @staticmethod
    def _checked_rows(rows: Rows | None, n_rows: int, where: str) -> tuple[int, int]:
        if rows is None:
            return 0, n_rows
        try:
            a, b = rows
        except (TypeError, ValueError):
            raise CodecError(f"{where}: rows must be a pair (start, stop), got {rows!r}") from None
        if not (_is_int(a) and _is_int(b) and 0 <= a <= b <= n_rows):
            raise CodecError(f"{where}: rows {rows!r} out of range 0:{n_rows}")
        return int(a), int(b)

    @staticmethod
    def _decode_blob(blob: bytes, i: int, c: int, lo: int, hi: int, numel: int,
                     out: np.ndarray, where: str) -> None:
        """Decode blob i (elements [i·c, ...)) and copy its part of [lo, hi) into ``out``."""
        start, end = i * c, min((i + 1) * c, numel)
        s, e = max(start, lo), min(end, hi)
        what = f"{where}, blob {i}"
        if start >= lo and end <= hi:  # whole chunk wanted: decode in place
            decode_chunk_into(blob, out[start - lo:end - lo], what)
            return
        tmp = np.empty(end - start, out.dtype)
        decode_chunk_into(blob, tmp, what)
        out[s - lo:e - lo] = tmp[s - start:e - start]

    def _run_decode(self, fetch: BlobFetcher, indices: range,
                    work: Callable[[int, bytes], None], where: str) -> None:
        """Fetch blobs in order on this thread; decode up to ``threads`` at a time."""
        def get(i: int) -> bytes:
            blob = fetch(i)
            if not isinstance(blob, bytes | bytearray | memoryview):
                raise CodecError(f"{where}: blob {i} is {type(blob).__name__}, not bytes")
            return blob

        if self.threads == 1 or len(indices) == 1:
            for i in indices:
                work(i, get(i))
            return
        pending: list[Future[None]] = []
        pool = _pool(self.threads)
        try:
            for i in indices:
                pending.append(pool.submit(work, i, get(i)))
                if len(pending) > self.threads:
                    pending.pop(0).result()
            for f in pending:
                f.result()
        finally:
            for f in pending:
                f.cancel()

    def _map(self, fn: Callable[[int], bytes], items: range) -> Iterator[bytes]:
        """``map`` over chunks, in order, on up to ``threads`` threads."""
        if self.threads == 1 or len(items) <= 1:
            return map(fn, items)
        return _pool(self.threads).map(fn, items)


_pools: dict[int, ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()


def _pool(threads: int) -> ThreadPoolExecutor:
    """A shared pool per thread count: chunk work never waits on the pool, so sharing it
    between concurrent tensors cannot deadlock."""
    with _pools_lock:
        pool = _pools.get(threads)
        if pool is None:
            pool = _pools[threads] = ThreadPoolExecutor(threads, thread_name_prefix="llmc-exact")
        return pool
