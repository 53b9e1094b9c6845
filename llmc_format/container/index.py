"""The index: what the file holds and where, as frozen dataclasses <-> msgpack.

The index is one msgpack map written after the data region (so a writer can stream).
``parse_index`` validates everything a reader must check before it trusts an offset or
allocates a buffer (spec/FORMAT.md §index, §validation); unknown keys are ignored so that
minor versions can add fields.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import msgpack

from llmc_format import dtypes
from llmc_format.container import layout
from llmc_format.container.names import check_attachment_name, check_names
from llmc_format.errors import FormatError, LimitError
from llmc_format.plaindata import too_deep


@dataclass(frozen=True)
class BlobRef:
    """One stored blob: where it is and its XXH3-64. ``stage`` = pipeline stage owning it."""

    offset: int
    length: int
    checksum: int
    stage: int = 0

    @property
    def end(self) -> int:
        return self.offset + self.length

    def to_dict(self) -> dict[str, int]:
        return {"stage": self.stage, "offset": self.offset, "length": self.length,
                "checksum": self.checksum}


@dataclass(frozen=True)
class TensorEntry:
    name: str
    dtype: str
    shape: tuple[int, ...]
    pipeline: tuple[dict[str, Any], ...] = ()
    blobs: tuple[BlobRef, ...] = ()
    alias_of: str | None = None
    quant: dict[str, Any] | None = None
    rd: dict[str, Any] | None = None
    #: XXH3-64 of the source tensor's bytes and of the decoded tensor's bytes
    digest: dict[str, int] | None = None

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        """Size of the decoded tensor in bytes."""
        return self.numel * dtypes.itemsize(self.dtype)

    @property
    def stored_bytes(self) -> int:
        return sum(b.length for b in self.blobs)

    def stage_blobs(self, stage: int) -> list[BlobRef]:
        return [b for b in self.blobs if b.stage == stage]

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}
        if self.alias_of is not None:
            d["alias_of"] = self.alias_of
        else:
            d["pipeline"] = [dict(c) for c in self.pipeline]
            d["blobs"] = [b.to_dict() for b in self.blobs]
        if self.quant is not None:
            d["quant"] = self.quant
        if self.rd is not None:
            d["rd"] = self.rd
        if self.digest is not None:
            d["digest"] = self.digest
        return d


@dataclass(frozen=True)
class AttachmentEntry:
    """A non-tensor file (config.json, tokenizer...) stored whole in one blob."""

    name: str
    size: int
    encoding: str  # "raw" | "zstd"
    blob: BlobRef

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "size": self.size, "encoding": self.encoding,
                "blob": self.blob.to_dict()}


@dataclass(frozen=True)
class PreviousIndex:
    """Where the index superseded by a metadata update lies (for `verify`)."""

    index_offset: int
    index_length: int
    index_checksum: int

    def to_dict(self) -> dict[str, int]:
        return {"index_offset": self.index_offset, "index_length": self.index_length,
                "index_checksum": self.index_checksum}


@dataclass(frozen=True)
class Index:
    tensors: tuple[TensorEntry, ...]
    attachments: tuple[AttachmentEntry, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict)
    data_end: int = 0
    previous: PreviousIndex | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "metadata": self.metadata,
            "data_end": self.data_end,
            "tensors": [t.to_dict() for t in self.tensors],
            "attachments": [a.to_dict() for a in self.attachments],
        }
        if self.previous is not None:
            d["previous"] = self.previous.to_dict()
        return d

    def pack(self) -> bytes:
        return msgpack.packb(self.to_dict(), use_bin_type=True)

    def all_blobs(self) -> list[tuple[str, BlobRef]]:
        """Every blob with a label for messages (tensor or attachment name)."""
        out = [(t.name, b) for t in self.tensors for b in t.blobs]
        out += [(f"attachment {a.name}", a.blob) for a in self.attachments]
        return out


# --------------------------------------------------------------------------- parsing


def _ext_hook(code: int, data: bytes) -> Any:
    raise FormatError(f"index uses msgpack extension type {code}, which the format forbids")


class _ContainerBudget:
    """msgpack ``object_hook``/``list_hook`` counting decoded maps and arrays.

    Each hook runs once per container, after it is built; past the budget the decode
    stops with ``LimitError``, so memory never grows beyond what the budget allows
    (spec/FORMAT.md §8 rule 4).
    """

    def __init__(self, limit: int) -> None:
        self.left = limit
        self.limit = limit

    def __call__(self, value: Any) -> Any:
        self.left -= 1
        if self.left < 0:
            raise LimitError(f"index holds more than {self.limit} msgpack maps and arrays "
                             f"(at most one per {layout.INDEX_BYTES_PER_CONTAINER} index bytes "
                             f"plus {layout.INDEX_CONTAINER_SLACK})")
        return value


def _no_timestamp(value: Any) -> None:
    # msgpack-python decodes extension type -1 (timestamp) itself, without ``ext_hook``
    if isinstance(value, msgpack.Timestamp):
        raise FormatError("index uses the msgpack timestamp extension (type -1), which the "
                          "format forbids")


def _array(items: list[Any]) -> list[Any]:
    for v in items:
        _no_timestamp(v)
    return items


def _map_pairs(pairs: list[tuple[Any, Any]]) -> dict[str, Any]:
    """Every msgpack map of the index: str keys only, each at most once (a duplicate key
    would let two readers see two different values, one taking the first, one the last)."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        _no_timestamp(value)
        if not isinstance(key, str):
            raise FormatError(f"index map key {key!r:.40} is not a string")
        if key in out:
            raise FormatError(f"index map has the key {key!r:.80} twice")
        out[key] = value
    return out


def unpack_index_bytes(data: bytes) -> Any:
    """msgpack-decode the index bytes with bounded memory, as plain data only.

    Each container's length is bounded by ``len(data)`` and their number by
    ``len(data) / INDEX_BYTES_PER_CONTAINER`` plus a slack: an index cannot cost more than
    a small multiple of its size to decode. Extension types (e.g. the timestamp type -1),
    non-str map keys and duplicate map keys are refused (spec/FORMAT.md §5): each would
    make two readers disagree or parse more than plain data.
    """
    budget = _ContainerBudget(len(data) // layout.INDEX_BYTES_PER_CONTAINER
                              + layout.INDEX_CONTAINER_SLACK)

    def pairs(p: list[tuple[Any, Any]]) -> dict[str, Any]:
        return budget(_map_pairs(p))

    def array(items: list[Any]) -> list[Any]:
        return budget(_array(items))

    try:
        obj = msgpack.unpackb(
            data, raw=False, strict_map_key=True, ext_hook=_ext_hook, use_list=True,
            object_pairs_hook=pairs, list_hook=array, timestamp=0,
        )
        _no_timestamp(obj)
        return obj
    except FormatError:
        raise
    except Exception as exc:  # msgpack raises many types (ExtraData, ValueError, ...)
        raise FormatError(f"index is not valid msgpack: {type(exc).__name__}: {exc}") from None


def check_nesting(value: Any, where: str, limit: int = layout.MAX_NESTING) -> None:
    """``LimitError`` if maps/arrays in ``value`` nest deeper than ``limit`` levels."""
    if too_deep(value, limit):
        raise LimitError(f"{where}: maps/arrays nest deeper than {limit} levels")


def _get(d: dict[str, Any], key: str, typ: type | tuple[type, ...], where: str,
         default: Any = ...) -> Any:
    if key not in d:
        if default is ...:
            raise FormatError(f"{where}: missing key {key!r}")
        return default
    v = d[key]
    if not isinstance(v, typ) or (typ is int and isinstance(v, bool)):
        raise FormatError(f"{where}: key {key!r} has type {type(v).__name__}")
    return v


def _uint(d: dict[str, Any], key: str, where: str) -> int:
    v = _get(d, key, int, where)
    if isinstance(v, bool) or v < 0 or v >= 2**64:
        raise FormatError(f"{where}: {key} = {v} is not an unsigned 64-bit integer")
    return v


def _blob(d: Any, where: str) -> BlobRef:
    if not isinstance(d, dict):
        raise FormatError(f"{where}: blob entry is not a map")
    return BlobRef(
        offset=_uint(d, "offset", where),
        length=_uint(d, "length", where),
        checksum=_uint(d, "checksum", where),
        stage=_uint(d, "stage", where),
    )


def _name(v: Any, where: str) -> str:
    if not isinstance(v, str) or not v:
        raise FormatError(f"{where}: name must be a non-empty string")
    if len(v.encode("utf-8", "surrogatepass")) > layout.MAX_NAME_BYTES:
        raise LimitError(f"{where}: name is longer than {layout.MAX_NAME_BYTES} bytes")
    return v


def _tensor(d: Any, i: int) -> TensorEntry:
    where = f"index tensor #{i}"
    if not isinstance(d, dict):
        raise FormatError(f"{where}: not a map")
    name = _name(d.get("name"), where)
    where = f"tensor {name!r}"
    dtype = _get(d, "dtype", str, where)
    dtypes.to_numpy(dtype)  # FormatError if unknown
    shape = _get(d, "shape", list, where)
    if len(shape) > layout.MAX_RANK:
        raise LimitError(f"{where}: rank {len(shape)} exceeds {layout.MAX_RANK}")
    nbytes = dtypes.itemsize(dtype)
    for s in shape:
        if not isinstance(s, int) or isinstance(s, bool) or s < 0:
            raise FormatError(f"{where}: shape {shape!r} has a non-natural dimension")
        nbytes *= s
        if nbytes > layout.MAX_TENSOR_BYTES:
            raise LimitError(f"{where}: shape {shape} x {dtype} exceeds 2**62 bytes")
    quant = _get(d, "quant", dict, where, None)
    rd = _get(d, "rd", dict, where, None)
    check_nesting(quant, f"{where} quant")
    check_nesting(rd, f"{where} rd")
    alias = d.get("alias_of")
    if alias is not None:
        # an alias is only a name for a stored tensor: anything it could decode by itself
        # (its own pipeline, blobs or digest) would let two readers disagree on its value
        extra = sorted(k for k in ("pipeline", "blobs", "digest") if k in d)
        if extra:
            raise FormatError(f"{where}: an alias entry must not have {extra}")
        return TensorEntry(name, dtype, tuple(shape), alias_of=_name(alias, where),
                           quant=quant, rd=rd)
    digest_map = _get(d, "digest", dict, where)
    # writers write both (FORMAT.md §5.6); a published 1.0 file (v1-ggml) lacks `decoded`,
    # so a reader accepts its absence and then has no decoded digest to check
    digest = {k: _uint(digest_map, k, f"{where} digest") for k in ("source", "decoded")
              if k == "source" or k in digest_map}
    pipeline = _get(d, "pipeline", list, where)
    if not 1 <= len(pipeline) <= layout.MAX_PIPELINE_STAGES:
        raise LimitError(f"{where}: pipeline has {len(pipeline)} stages (1..8 allowed)")
    for c in pipeline:
        if not isinstance(c, dict) or not isinstance(c.get("id"), str):
            raise FormatError(f"{where}: pipeline stage is not a map with a string 'id'")
    check_nesting(pipeline, f"{where} pipeline")
    blobs = tuple(_blob(b, where) for b in _get(d, "blobs", list, where))
    for b in blobs:
        if b.stage >= len(pipeline):
            raise FormatError(f"{where}: blob at offset {b.offset} names stage {b.stage}, "
                              f"but the pipeline has {len(pipeline)}")
    return TensorEntry(name, dtype, tuple(shape), tuple(pipeline), blobs, None, quant, rd, digest)


def _attachment(d: Any, i: int) -> AttachmentEntry:
    where = f"index attachment #{i}"
    if not isinstance(d, dict):
        raise FormatError(f"{where}: not a map")
    name = _name(d.get("name"), where)
    # safe to write anywhere (FORMAT.md §5.5), checked at open so no reader has to trust
    # it later: the one check (container.names), by itself here, as a set in parse_index
    check_attachment_name(name)
    where = f"attachment {name!r}"
    enc = _get(d, "encoding", str, where)
    if enc not in ("raw", "zstd"):
        raise FormatError(f"{where}: unknown encoding {enc!r}")
    size, blob = _uint(d, "size", where), _blob(d.get("blob"), where)
    if blob.stage != 0:
        raise FormatError(f"{where}: blob stage is {blob.stage}, must be 0")
    if enc == "raw" and blob.length != size:
        raise FormatError(f"{where}: raw attachment of {size} bytes stored in a blob of "
                          f"{blob.length}")
    return AttachmentEntry(name, size, enc, blob)


def parse_index(obj: Any, *, data_start: int, index_offset: int, alignment: int) -> Index:
    """Validate a decoded index against the file geometry; return the typed ``Index``.

    Checks (spec/FORMAT.md §validation): schema and types; names unique and bounded, and
    safe to unpack (``names``: no ``__metadata__`` tensor, attachment names that are safe
    relative paths clashing neither with weight files nor with each other);
    ranks and byte sizes bounded; aliases resolve to stored tensors; every blob aligned
    and inside ``[data_start, data_end)``; blobs tile the data region exactly
    (each starts at the aligned end of the previous one: no overlap, no hole).
    """
    if not isinstance(obj, dict):
        raise FormatError("index is not a msgpack map")
    metadata = _get(obj, "metadata", dict, "index", {})
    check_nesting(metadata, "index metadata")
    data_end = _uint(obj, "data_end", "index")
    tensors = tuple(_tensor(t, i) for i, t in enumerate(_get(obj, "tensors", list, "index")))
    attachments = tuple(
        _attachment(a, i) for i, a in enumerate(_get(obj, "attachments", list, "index", []))
    )
    prev = None
    if "previous" in obj:  # a nil is a wrong type, not an absent key
        p = _get(obj, "previous", dict, "index")
        prev = PreviousIndex(_uint(p, "index_offset", "index.previous"),
                             _uint(p, "index_length", "index.previous"),
                             _uint(p, "index_checksum", "index.previous"))
    index = Index(tensors, attachments, metadata, data_end, prev)

    seen: set[str] = set()
    for t in tensors:
        if t.name in seen:
            raise FormatError(f"duplicate tensor name {t.name!r} in the index")
        seen.add(t.name)
    stored = {t.name for t in tensors if t.alias_of is None}
    by_name = {t.name: t for t in tensors}
    for t in tensors:
        if t.alias_of is not None:
            target = by_name.get(t.alias_of)
            if t.alias_of not in stored or target is None:
                raise FormatError(f"tensor {t.name!r} is an alias of {t.alias_of!r}, "
                                  "which is not a stored tensor")
            if (target.dtype, target.shape) != (t.dtype, t.shape):
                raise FormatError(f"alias {t.name!r} differs in dtype/shape from {t.alias_of!r}")
    names = [a.name for a in attachments]
    if len(set(names)) != len(names):
        raise FormatError("duplicate attachment names in the index")
    check_names((t.name for t in tensors), names)  # what unpack would write them as

    if not data_start <= data_end <= index_offset:
        raise FormatError(f"index data_end {data_end} is outside [{data_start}, {index_offset}]")
    if (prev is None) != (data_end == index_offset):
        if prev is None:
            raise FormatError(f"bytes {data_end}..{index_offset} lie between the data region "
                              "and the index, but no previous index is recorded")
        raise FormatError("index records a previous index but none lies before it")
    if prev is not None and not data_end <= prev.index_offset < index_offset:
        raise FormatError(f"previous index offset {prev.index_offset} is out of place")
    check_tiling(index, data_start, data_end, alignment)
    return index


def check_tiling(index: Index, data_start: int, data_end: int, alignment: int) -> None:
    """Blobs must tile ``[data_start, data_end)``: aligned, non-empty, contiguous."""
    blobs = sorted(index.all_blobs(), key=lambda nb: nb[1].offset)
    pos = data_start
    for label, b in blobs:
        if b.length == 0:
            raise FormatError(f"{label}: zero-length blob at offset {b.offset}")
        if b.offset != pos:
            kind = "overlaps the previous blob" if b.offset < pos else "leaves a hole before it"
            raise FormatError(f"{label}: blob at offset {b.offset} {kind} "
                              f"(expected offset {pos})")
        pos = layout.align_up(b.end, alignment)
    if pos != data_end:
        raise FormatError(f"blobs end at {pos} but the index says the data region ends at "
                          f"{data_end}")
