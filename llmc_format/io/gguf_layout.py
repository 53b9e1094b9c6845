"""The GGUF layout record: what an archive needs, besides its tensors, to rebuild a GGUF file
byte for byte.

A GGUF file is a prefix (magic, version, key/value metadata, tensor infos, padding to the
data alignment) followed by the tensors' data at the offsets the infos give, separated by
alignment padding. The record keeps the prefix and every gap verbatim (padding is zeros
in files llama.cpp writes, but a reader must not rely on it), and for each tensor, in data
order, either the archive tensor whose ``ggml`` blocks are its bytes or the bytes
themselves (tensors the archive does not hold in GGUF form: ones transformers drops,
such as ``rope_freqs``, or ones it transforms beyond a row order). Rebuilding
concatenates them and checks the whole file's SHA-256 against the recorded one.

It is stored as the archive attachment ``.llmc/gguf-layout.msgpack`` (normative:
spec/FORMAT.md §7.8, with its errors); attachments under ``.llmc/`` are the archive's own
and are not written out by unpack.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import msgpack

from llmc_format.errors import CodecError, FormatError, SourceError

#: attachment name of the record (the ``.llmc/`` prefix: internal, never unpacked)
LAYOUT_ATTACHMENT = ".llmc/gguf-layout.msgpack"
VERSION = 1
_READ = 1 << 22


def layout_record(path: Path, tensors: Iterable[Any], data_offset: int,
                  archive_names: dict[str, str]) -> bytes:
    """The record of the GGUF file ``path`` (msgpack bytes).

    ``tensors``: ``gguf.GGUFReader`` tensors (name, ``data_offset``, ``n_bytes``, type);
    ``archive_names``: GGUF name -> archive tensor name for tensors the archive stores as
    their ggml blocks. The file is read once, for the gaps, the other tensors' bytes and
    the SHA-256.
    """
    size = path.stat().st_size
    spans = sorted(((int(t.data_offset), int(t.n_bytes), t) for t in tensors),
                   key=lambda s: s[0])
    records: list[dict[str, Any]] = []
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        prefix = f.read(data_offset)
        sha.update(prefix)
        pos = data_offset
        for i, (offset, n, t) in enumerate(spans):
            if offset < pos:
                raise SourceError(f"{path.name}: GGUF tensor {t.name!r} overlaps the one before")
            gap_before = f.read(offset - pos)
            sha.update(gap_before)
            if i == 0 and gap_before:
                prefix += gap_before  # data region padding before the first tensor
            elif gap_before:
                records[-1]["gap"] = gap_before
            rec: dict[str, Any] = {"name": t.name, "type": t.tensor_type.name, "size": n}
            target = archive_names.get(t.name)
            if target is not None:
                rec["tensor"] = target
                left = n
                while left:  # hashed, not kept
                    chunk = f.read(min(left, _READ))
                    if not chunk:
                        raise SourceError(f"{path.name}: truncated in tensor {t.name!r}")
                    sha.update(chunk)
                    left -= len(chunk)
            else:
                rec["data"] = f.read(n)
                sha.update(rec["data"])
            records.append(rec)
            pos = offset + n
        tail = f.read()
        sha.update(tail)
    if pos + len(tail) != size:
        raise SourceError(f"{path.name}: GGUF tensor data runs past the end of the file")
    record = {"version": VERSION, "size": size, "sha256": sha.hexdigest(), "prefix": prefix,
              "tensors": records, "tail": tail}
    return msgpack.packb(record, use_bin_type=True)


def _is_uint(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 1 << 64


def parse_record(data: bytes) -> dict[str, Any]:
    """Validate a record (spec/FORMAT.md §7.8): the index's msgpack rules (no extension
    types, str keys, no duplicate keys, one value), then the schema. Any fault is
    ``CodecError`` (the taxonomy's ``Decode`` of the attachment): the archive stays
    readable, only the GGUF file cannot be rebuilt."""
    from llmc_format.container.index import unpack_index_bytes

    where = "GGUF layout record"
    try:
        rec = unpack_index_bytes(data)
    except FormatError as exc:  # LimitError included: a record is read like an index
        raise CodecError(f"{where}: {str(exc).replace('index', 'record')}") from None
    if not isinstance(rec, dict) or not _is_uint(rec.get("version")) or \
            rec["version"] != VERSION:  # not True, not 1.0: msgpack keeps the types apart
        raise CodecError(f"{where}: version {rec.get('version') if isinstance(rec, dict) else rec!r:.40}"
                         f" is not {VERSION}")
    if not _is_uint(rec.get("size")):
        raise CodecError(f"{where}: 'size' missing or not an unsigned integer")
    sha = rec.get("sha256")
    if not (isinstance(sha, str) and len(sha) == 64 and all(c in "0123456789abcdef" for c in sha)):
        raise CodecError(f"{where}: 'sha256' missing or not 64 lowercase hex digits")
    for key, typ in (("prefix", bytes), ("tensors", list), ("tail", bytes)):
        if not isinstance(rec.get(key), typ):
            raise CodecError(f"{where}: {key!r} missing or not {typ.__name__}")
    total = len(rec["prefix"]) + len(rec["tail"])
    for t in rec["tensors"]:
        ok = isinstance(t, dict) and isinstance(t.get("name"), str) and \
            isinstance(t.get("type"), str) and _is_uint(t.get("size")) and \
            isinstance(t.get("gap", b""), bytes) and \
            ("tensor" in t) != ("data" in t) and \
            isinstance(t.get("tensor", ""), str) and isinstance(t.get("data", b""), bytes)
        if not ok:
            raise CodecError(f"{where}: bad tensor record {str(t)[:80]}")
        if "data" in t and len(t["data"]) != t["size"]:
            raise CodecError(f"{where}: tensor {t['name']!r} holds {len(t['data'])} bytes, "
                             f"declares {t['size']}")
        total += t["size"] + len(t.get("gap", b""))
    if total != rec["size"]:
        raise CodecError(f"{where}: parts add up to {total} bytes, the file had {rec['size']}")
    return rec


def referenced(rec: dict[str, Any]) -> dict[str, tuple[str, int]]:
    """archive tensor name -> (ggml type, bytes) for the tensors the record takes from the
    archive."""
    return {t["tensor"]: (t["type"], t["size"]) for t in rec["tensors"] if "tensor" in t}


def rebuild(rec: dict[str, Any], tensor_bytes: Callable[[str], bytes | memoryview],
            write: Callable[[bytes | memoryview], object]) -> str:
    """Write the GGUF file's bytes in order through ``write``; return their SHA-256 (hex).

    ``tensor_bytes(name)`` returns an archive tensor's ggml blocks. Sizes are checked
    against the record as the bytes go out (``CodecError``); the caller compares the digest
    (``DigestError`` on a mismatch, spec/FORMAT.md §7.8).
    """
    sha = hashlib.sha256()

    def out(b: bytes | memoryview) -> None:
        sha.update(b)
        write(b)

    out(rec["prefix"])
    for t in rec["tensors"]:
        data = t["data"] if "data" in t else tensor_bytes(t["tensor"])
        if len(data) != t["size"]:
            raise CodecError(f"GGUF tensor {t['name']!r}: archive gave {len(data)} bytes, "
                              f"the file had {t['size']}")
        out(data)
        if t.get("gap"):
            out(t["gap"])
    out(rec["tail"])
    return sha.hexdigest()
