"""Decode a tensor (or a block of its rows) out of an open archive.

The one place that turns an index entry into an array: the public API, the archive source
(`repack`), unpack, verify, extract and `from_pretrained` all call `read_tensor`. It sits
below `io/` and `pipeline/` (it needs only the container reader and the codec stages)."""

from __future__ import annotations

import math

import numpy as np

from llmc_format import dtypes
from llmc_format.codecs.base import ArraySpec, Rows
from llmc_format.codecs.stages import build, decode_tensor
from llmc_format.container import layout
from llmc_format.container.index import TensorEntry
from llmc_format.container.reader import ZSTD_MAX_EXPANSION, Reader
from llmc_format.errors import CodecError, DigestError, LimitError

#: An ``exact`` blob of L bytes decodes to at most this many times L bytes: each of its
#: byte planes is raw (1:1) or one zstd frame. A tensor declaring more than its blobs can
#: hold is refused before anything is allocated.
EXACT_MAX_EXPANSION = ZSTD_MAX_EXPANSION
#: A ``ggml`` tensor's decoded values take at most this many times its blocks' bytes
#: (float32 from IQ1_S: 256 values of 4 bytes from 50 bytes, 20.5x; rounded up)
GGML_MAX_VALUE_EXPANSION = 32
#: numpy (and torch) cannot hold a shape whose non-zero dimensions multiply beyond this,
#: even when another dimension is 0 (the index only bounds the product, which is then 0)
MAX_ARRAY_BYTES = 1 << 62


def check_expansion(reader: Reader, entry: TensorEntry) -> None:
    """``LimitError`` if ``entry`` declares more bytes than its blobs can justify.

    An ``exact`` tensor decodes to at most ``EXACT_MAX_EXPANSION`` x its stored bytes.
    Aliases count as further copies (each may be decoded or written on its own), so a
    stored tensor with k aliases may declare at most 1/(k+1) of that; this also holds for
    tensors of other pipelines once they have aliases. Without it, 20,000 aliases of one
    highly compressible tensor made a 35 KB file unpack to 2.1 GB.
    """
    copies = 1 + reader.alias_counts.get(entry.name, 0)
    ids = [c.get("id") for c in entry.pipeline]
    exact = ids == ["exact"]
    # spec/FORMAT.md §8 rule 10 names these pipelines by id (ids are forever, §7):
    # ggml blocks: at most GGML_MAX_VALUE_EXPANSION value bytes per block byte, then zstd
    native = bool(ids) and ids[-1] == "ggml" and set(ids) <= {"ggml", "rowperm"}
    limit = EXACT_MAX_EXPANSION * (GGML_MAX_VALUE_EXPANSION if native else 1)
    if (exact or native or copies > 1) and copies * entry.nbytes > limit * entry.stored_bytes:
        aliases = f" x {copies} (itself and {copies - 1} aliases)" if copies > 1 else ""
        raise LimitError(f"tensor {entry.name!r}: declares {entry.nbytes} bytes{aliases}, but "
                         f"its {entry.stored_bytes} stored bytes can hold at most "
                         f"{limit * entry.stored_bytes}")


def check_shape_bound(entry: TensorEntry, name: str) -> None:
    """FORMAT.md §8 rule 9: even an empty tensor may not declare non-zero dimensions whose
    product (times the itemsize) exceeds 2**62 bytes (``LimitError``)."""
    if math.prod(d for d in entry.shape if d) * dtypes.itemsize(entry.dtype) > MAX_ARRAY_BYTES:
        raise LimitError(f"tensor {name!r}: shape {list(entry.shape)} has no in-memory array "
                         "(its non-zero dimensions multiply beyond 2**62 bytes)")


def read_tensor(reader: Reader, name: str, rows: Rows | None = None) -> np.ndarray:
    """Decode tensor ``name``; only the blobs covering ``rows`` are read and checked."""
    entry = reader.resolve(name)
    spec = ArraySpec(entry.dtype, entry.shape, name)
    by_stage = [entry.stage_blobs(i) for i in range(len(entry.pipeline))]

    def fetch(stage: int, i: int) -> bytes:
        refs = by_stage[stage]
        if not 0 <= i < len(refs):
            raise CodecError(f"tensor {name!r}: stage {stage} asked for blob {i} of {len(refs)}")
        return reader.read_blob(refs[i], f"tensor {name!r}")

    check_shape_bound(entry, name)
    check_expansion(reader, entry)
    try:
        array = decode_tensor(entry.pipeline, spec, [len(b) for b in by_stage], fetch, rows)
    except MemoryError:  # a declared size this machine cannot allocate: typed, not a crash
        raise LimitError(f"tensor {name!r}: decoding needs more memory than is available "
                         f"({entry.nbytes} bytes declared)") from None
    whole = rows is None or (rows[0] == 0 and rows[1] == (entry.shape[0] if entry.shape else 1))
    if whole and reader.verify_checksums:
        check_decoded_digest(entry.digest, array, name)
    return array


def check_decoded_digest(digest: dict[str, int] | None, array: np.ndarray, name: str) -> None:
    """A whole decoded tensor must hash to the writer's ``digest.decoded`` (FORMAT.md §5.6).

    Blob checksums prove the bytes are the writer's; this proves the *decoding* is: it
    catches a config that is wrong but intact under the index checksum, or a decoder that
    differs from the writer's. XXH3 runs at memory speed, far above any decoder here.
    """
    want = (digest or {}).get("decoded")
    if want is not None and layout.checksum(
            np.ascontiguousarray(array).reshape(-1).view(np.uint8)) != want:
        raise DigestError(f"tensor {name!r}: decoded tensor differs from what the writer "
                          "decoded (digest.decoded mismatch)")


def read_native_blocks(reader: Reader, name: str) -> bytes:
    """The source bytes a natively stored tensor keeps (its final ``ggml`` stage's blocks,
    in the source's row order), without decoding them to values."""
    entry = reader.resolve(name)
    # the same checks as read_tensor, in its order (FORMAT.md §7 "Order of checks", §7.8):
    # the shape and expansion bounds (decode_blocks allocates the whole tensor's blocks
    # first), then closed stored configs
    check_shape_bound(entry, name)
    check_expansion(reader, entry)
    stages = build(entry.pipeline, f"tensor {name!r}", stored=True)
    decode_blocks = getattr(stages[-1], "decode_blocks", None)
    if decode_blocks is None:
        raise CodecError(f"tensor {name!r} is not stored in its source encoding")
    spec = ArraySpec(entry.dtype, entry.shape, name)
    for s in stages[:-1]:
        spec = s.resolve(spec)  # type: ignore[attr-defined]
    k = len(stages) - 1
    refs = entry.stage_blobs(k)

    def fetch(i: int) -> bytes:
        if not 0 <= i < len(refs):
            raise CodecError(f"tensor {name!r}: asked for blob {i} of {len(refs)}")
        return reader.read_blob(refs[i], f"tensor {name!r}")

    return decode_blocks(fetch, len(refs), spec).tobytes()
