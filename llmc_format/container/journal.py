"""The resume journal of a pack in progress: which tensors of ``.NAME.XXXXXXXX.partial``
are final.

Packing a large model with a lossy codec takes hours; a crash, a reboot or Ctrl-C should
not throw that away. While the writer streams blobs into its partial file (a unique name
beside the destination, ``.NAME.XXXXXXXX.partial``, created exclusively) it appends, after
finished tensors, a record to ``.NAME.XXXXXXXX.partial.journal`` holding their index entries
and the file position just after their blobs. The data is fsynced *before* the record
is written, and the record after, so a record never describes bytes that are not on
disk. ``llmc pack --resume`` truncates the partial file to the last record's position,
reloads the entries and encodes only the remaining tensors; because blobs are written in
source order and entries carry everything the index needs, the finished archive is
byte-identical to an uninterrupted pack.

Layout (little-endian)::

    8 bytes  magic "LLMCJRN1"
    then records:  u32 length | u64 XXH3-64 of the payload | payload (msgpack map)

The first record is ``{"fingerprint": str, "alignment": int, "data_start": int}``: the
fingerprint hashes the source description, tensor list and options, and a resume with a
different one is refused. Each later record is ``{"tensors": [entry maps], "position":
int}``. A record cut short or failing its checksum ends the journal (a crash mid-append
leaves exactly that); everything before it stands.

The journal is untrusted input like any file: records are msgpack-decoded with the
index's bounds, entries are validated by the index parser (types, names, limits, blobs
tiling ``[previous position, position)``), names must be unique across records, and every
blob is re-read from the partial file and checked against its checksum and zero padding.
A record whose blobs do not check ends the usable journal there (the partial file lost
data after it); a record that checks but makes no sense is a ``FormatError``.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import msgpack

from llmc_format.container import layout
from llmc_format.container.index import TensorEntry, parse_index, unpack_index_bytes
from llmc_format.errors import FormatError, LimitError, LlmcError

MAGIC = b"LLMCJRN1"
VERSION = 1
_RECORD = struct.Struct("<IQ")
#: a journal holds index entries only: the index's own limit bounds it
MAX_JOURNAL_BYTES = 2 * layout.MAX_INDEX_BYTES


def journal_path(partial: Path) -> Path:
    """``.NAME.XXXXXXXX.partial.journal`` beside ``.NAME.XXXXXXXX.partial``."""
    return partial.with_name(partial.name + ".journal")


PARTIAL_SUFFIX = ".partial"


def _regular(path: Path) -> os.stat_result | None:
    """``lstat`` of ``path`` if it is a regular file (not a symlink), else None."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return st if stat.S_ISREG(st.st_mode) else None


def _starts_with(path: Path, magic: bytes) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        return os.read(fd, len(magic)) == magic
    finally:
        os.close(fd)


def leftovers(dst: Path) -> list[tuple[Path, Path]]:
    """Partial files (and their journal paths) of earlier packs to ``dst``, newest first.

    Only what is provably ours: regular files (never a symlink) named as the writer names
    them (``tempfile``'s 8 random characters), starting with the archive header magic;
    a journal counts only beside such a file and starting with the journal magic (else it
    is listed as absent, so that a fresh pack removes only the partial).
    """
    pattern = re.compile(re.escape(f".{dst.name}.") + r"[A-Za-z0-9_]{8}"
                         + re.escape(PARTIAL_SUFFIX))
    found: list[tuple[float, Path, Path]] = []
    try:
        names = os.listdir(dst.parent)
    except OSError:
        return []
    for name in names:
        if not pattern.fullmatch(name):
            continue
        partial = dst.parent / name
        st = _regular(partial)
        if st is None or not _starts_with(partial, layout.MAGIC):
            continue
        found.append((st.st_mtime, partial, journal_path(partial)))
    found.sort(key=lambda f: f[0], reverse=True)
    return [(p, j) for _, p, j in found]


def owned_journal(path: Path) -> bool:
    """``path`` is a regular file that starts like a journal (``leftovers``' rule)."""
    return _regular(path) is not None and _starts_with(path, MAGIC)


def _open_exclusive(path: Path) -> BinaryIO:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    return os.fdopen(fd, "r+b")


def open_existing(path: Path) -> BinaryIO:
    """``path`` opened for update, never through a symlink (``OSError`` ``ELOOP`` then)."""
    return os.fdopen(os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC), "r+b")


class ResumeMismatchError(LlmcError):
    """The interrupted pack used another source or other options: it cannot be continued."""


@dataclass(frozen=True)
class ResumePoint:
    """Where an interrupted pack stopped: its finished tensors and the end of their data."""

    entries: tuple[TensorEntry, ...]
    position: int
    #: bytes of the journal that are valid up to this point (the rest is cut on reopen)
    journal_length: int


def _encode(obj: dict[str, Any]) -> bytes:
    payload = msgpack.packb(obj, use_bin_type=True)
    return _RECORD.pack(len(payload), layout.checksum(payload)) + payload


def _fsync(f: BinaryIO) -> None:
    f.flush()
    os.fsync(f.fileno())


class JournalWriter:
    """Appends records; each append is on disk (fsynced) when it returns."""

    def __init__(self, f: BinaryIO) -> None:
        self._f = f

    @classmethod
    def create(cls, path: Path, fingerprint: str, header: layout.Header) -> JournalWriter:
        f = _open_exclusive(path)  # owned by the JournalWriter, closed in close()
        f.write(MAGIC + _encode({"version": VERSION, "fingerprint": fingerprint,
                                 "alignment": header.alignment,
                                 "data_start": header.data_start}))
        _fsync(f)
        return cls(f)

    @classmethod
    def reopen(cls, path: Path, length: int) -> JournalWriter:
        """Continue a journal after its last usable record (a torn tail is cut off)."""
        f = open_existing(path)  # see create()
        f.truncate(length)
        f.seek(length)
        _fsync(f)
        return cls(f)

    def append(self, entries: list[TensorEntry], position: int) -> None:
        self._f.write(_encode({"tensors": [e.to_dict() for e in entries], "position": position}))
        _fsync(self._f)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._f.close()


def _records(data: bytes) -> list[tuple[bytes, int]]:
    """``(payload, end offset)`` of each intact record; stops at a torn or corrupt one."""
    out = []
    pos = len(MAGIC)
    while len(data) - pos >= _RECORD.size:
        length, csum = _RECORD.unpack_from(data, pos)
        start = pos + _RECORD.size
        if length > len(data) - start:
            break
        payload = data[start:start + length]
        if layout.checksum(payload) != csum:
            break
        pos = start + length
        out.append((payload, pos))
    return out


def _uint(obj: dict[str, Any], key: str, where: str) -> int:
    v = obj.get(key)
    if type(v) is not int or not 0 <= v < 2**64:
        raise FormatError(f"{where}: {key!r} is not an unsigned integer")
    return v


def load(path: Path, partial: Path, *, fingerprint: str,
         header: layout.Header) -> ResumePoint | None:
    """The point an interrupted pack can continue from, or None if there is none.

    ``ResumeMismatchError`` if the journal belongs to a pack of another source or with
    other options; ``FormatError`` if it is not a journal or holds invalid records.
    """
    jst = _regular(path)
    if jst is None or _regular(partial) is None:
        return None
    if jst.st_size > MAX_JOURNAL_BYTES:
        raise LimitError(f"pack journal {path} is {jst.st_size} bytes, over the "
                         f"{MAX_JOURNAL_BYTES}-byte limit")
    with os.fdopen(os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC), "rb") as jf:
        data = jf.read(MAX_JOURNAL_BYTES + 1)
    if not data.startswith(MAGIC):
        raise FormatError(f"{path} is not an llmc pack journal (bad magic)")
    records = _records(data)
    if not records:
        return None  # killed while writing the first record: nothing was finished
    _check_start(path, unpack_index_bytes(records[0][0]), fingerprint, header)
    with os.fdopen(os.open(partial, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC), "rb") as f:
        if f.read(header.data_start) != header.pack() + bytes(header.data_start - 64):
            return None  # not the file this journal describes: start over
        return _replay(path, f, records, header)


def _check_start(path: Path, start: Any, fingerprint: str, header: layout.Header) -> None:
    where = f"pack journal {path}"
    if not isinstance(start, dict) or start.get("version") != VERSION:
        raise FormatError(f"{where}: unknown journal version")
    if start.get("fingerprint") != fingerprint or start.get("alignment") != header.alignment:
        raise ResumeMismatchError(
            f"{where} belongs to a pack of another source or with other options; "
            "rerun with the same source and options, or without --resume to start over"
        )
    if _uint(start, "data_start", where) != header.data_start:
        raise FormatError(f"{where}: data start {start['data_start']} is not "
                          f"{header.data_start}")


def _replay(path: Path, f: BinaryIO, records: list[tuple[bytes, int]],
            header: layout.Header) -> ResumePoint:
    """Validate records in order; stop before the first whose blobs are not on disk."""
    size = os.fstat(f.fileno()).st_size
    entries: list[TensorEntry] = []
    names: set[str] = set()
    point = ResumePoint((), header.data_start, records[0][1])
    for n, (payload, end) in enumerate(records[1:], start=1):
        where = f"pack journal {path}, record {n}"
        rec = unpack_index_bytes(payload)
        if not isinstance(rec, dict) or not isinstance(rec.get("tensors"), list):
            raise FormatError(f"{where}: not a map with a 'tensors' list")
        pos = _uint(rec, "position", where)
        if pos < point.position or pos % header.alignment:
            raise FormatError(f"{where}: position {pos} is not an aligned offset after "
                              f"{point.position}")
        try:
            index = parse_index({"data_end": pos, "tensors": rec["tensors"]},
                                data_start=point.position, index_offset=pos,
                                alignment=header.alignment)
        except FormatError as exc:
            raise FormatError(f"{where}: {exc}") from None
        for t in index.tensors:
            if t.alias_of is not None or t.name in names:
                raise FormatError(f"{where}: tensor {t.name!r} is an alias or repeated")
            names.add(t.name)
        if pos > size or not all(_blob_ok(f, b, header.alignment) for t in index.tensors
                                 for b in t.blobs):
            break  # the partial file lost data after the previous record
        entries.extend(index.tensors)
        point = ResumePoint(tuple(entries), pos, end)
    return point


def _blob_ok(f: BinaryIO, ref: Any, alignment: int) -> bool:
    f.seek(ref.offset)
    raw = f.read(layout.align_up(ref.end, alignment) - ref.offset)
    data = raw[:ref.length]
    return (len(data) == ref.length and layout.checksum(data) == ref.checksum
            and not any(raw[ref.length:]))


def remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
