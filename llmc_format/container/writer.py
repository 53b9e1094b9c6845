"""Streaming, atomic writer of .llmc files.

Blobs are written as they come (bounded memory: only the index entries are kept), into
a temporary file beside the destination; ``close()`` appends the index and footer,
fsyncs and renames it over the destination in one step. A crash or an exception leaves
the destination untouched (no file, or the previous file), never a partial archive.

With ``journal=<fingerprint>`` the writer also keeps ``.NAME.partial.journal``
(``journal.py``): ``commit()`` after each finished tensor makes it resumable, and
``resume=True`` continues an interrupted pack with the same fingerprint. An interrupted
or failed journaled write keeps the partial file and its journal when at least one tensor
was finished, so that the work can be resumed.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import zstandard

from llmc_format.container import journal as journal_file
from llmc_format.container import layout, names
from llmc_format.container.index import (
    AttachmentEntry,
    BlobRef,
    Index,
    PreviousIndex,
    TensorEntry,
)
from llmc_format.errors import FormatError, LlmcError
from llmc_format.outfiles import (
    OutputLock,
    check_output_file,
    check_still_new,
    fsync_dir,
    output_errors,
    temp_file,
    umask,
)

#: seconds between journal commits: each costs two fsyncs, so not after every tiny tensor
DEFAULT_JOURNAL_INTERVAL = 1.0


#: zstd level of attachments. SmolLM2's tokenizer.json (3.52 MB): level 12 gives 596 KB in
#: 0.33 s, level 19 507 KB in 3.1 s — 3 s more per pack for 0.08% of a 110 MB archive.
ATTACHMENT_ZSTD_LEVEL = 12


class Writer:
    """Write one archive. Use as a context manager; nothing appears at ``path`` until close."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        alignment: int = layout.DEFAULT_ALIGNMENT,
        metadata: dict[str, Any] | None = None,
        journal: str | None = None,
        resume: bool = False,
        journal_interval: float = DEFAULT_JOURNAL_INTERVAL,
        new: bool | None = None,
    ) -> None:
        """``journal``: a fingerprint of the source and options; enables the resume
        journal. ``resume``: continue the interrupted write with that fingerprint, if any
        (``resumed`` then lists the tensors already in the file). ``new``: ``path`` did not
        exist when the command began (None: whether it exists now, under the lock); a new
        output that exists by the time it would be renamed into place is not replaced
        (``OutputError``), at the start and again before the rename."""
        if not layout.valid_alignment(alignment):
            raise FormatError(f"alignment {alignment} must be a power of two in "
                              f"[{layout.MIN_ALIGNMENT}, {layout.MAX_ALIGNMENT}]")
        self.path = Path(path)
        self.header = layout.Header(alignment=alignment)
        self.metadata: dict[str, Any] = dict(metadata or {})
        self._tensors: list[TensorEntry] = []
        self._names: set[str] = set()
        self._attachments: list[AttachmentEntry] = []
        self._attachment_names = names.AttachmentNames()
        check_output_file(self.path)
        self._lock = OutputLock(self.path)
        self._f: Any = None
        try:
            self._new = not os.path.lexists(self.path) if new is None else new
            check_still_new(self.path, self._new)
            self._start(journal, resume, journal_interval)
        except BaseException:
            self._lock.release()
            raise
        self._closed = False

    def _start(self, journal: str | None, resume: bool, journal_interval: float) -> None:
        """Resume the newest partial file of this destination, or start a new one
        (removing earlier ones: the lock says no other writer uses them)."""
        found = journal_file.leftovers(self.path)
        point = None
        if resume and journal is not None and found:
            partial, journal_path = found[0]
            point = journal_file.load(journal_path, partial, fingerprint=journal,
                                      header=self.header)
            if point is not None:
                found = found[1:]
                self.tmp_path = partial
        for partial, journal_path in found:  # stale: never paired with new data
            if journal_file.owned_journal(journal_path):
                journal_file.remove(journal_path)
            journal_file.remove(partial)
        if point is None:
            fd, self.tmp_path = temp_file(self.path, journal_file.PARTIAL_SUFFIX)
        self._init_journal(journal, journal_interval)
        if point is not None:
            with output_errors(self.path):
                self._resume_from(point)
            return
        try:
            with output_errors(self.path):
                self._f = os.fdopen(fd, "wb")
                self._f.write(self.header.pack())
                self._pad_to(self.header.data_start)
                self._f.flush()  # the magic on disk at once: a leftover is provably ours
        except BaseException:
            with contextlib.suppress(OSError):
                self._f.close() if self._f is not None else os.close(fd)
            journal_file.remove(self.tmp_path)
            raise

    # -- resume journal -------------------------------------------------------------------
    def _init_journal(self, fingerprint: str | None, interval: float) -> None:
        self.journal_path = journal_file.journal_path(self.tmp_path)
        self.resumed: tuple[TensorEntry, ...] = ()
        self._fingerprint = fingerprint
        self._journal: journal_file.JournalWriter | None = None
        self._journal_interval = interval
        # the first finished tensor is journaled at once: a pack whose writing takes less
        # than one interval is resumable too (the interval then spaces later commits)
        self._last_commit = -math.inf
        self._committed = 0  # entries of self._tensors already journaled (or skipped)
        self._tensors_end = self.header.data_start  # file position after the last tensor

    def _resume_from(self, point: journal_file.ResumePoint) -> None:
        """Cut the partial file after the last journaled tensor and take its entries."""
        self._f = journal_file.open_existing(self.tmp_path)  # closed in close()/abort()
        self._f.truncate(point.position)
        self._f.seek(point.position)
        for entry in point.entries:
            self.add_tensor(entry)
        self.resumed = point.entries
        self._committed = len(self._tensors)
        self._tensors_end = point.position
        self._journal = journal_file.JournalWriter.reopen(self.journal_path,
                                                          point.journal_length)

    def commit(self, *, force: bool = False) -> None:
        """Make the tensors finished so far resumable: fsync their data, then journal them.

        Without ``force`` this happens for the first finished tensor, then at most every
        ``journal_interval`` seconds. Aliases
        are not journaled (a resumed pack adds them again at the end)."""
        if self._fingerprint is None or self._committed == len(self._tensors):
            return
        now = time.monotonic()
        if not force and now - self._last_commit < self._journal_interval:
            return
        new = [t for t in self._tensors[self._committed:] if t.alias_of is None]
        if new:
            with output_errors(self.path):
                self._f.flush()
                os.fsync(self._f.fileno())  # the data first: a record never outruns its bytes
                if self._journal is None:
                    self._journal = journal_file.JournalWriter.create(
                        self.journal_path, self._fingerprint, self.header)
                self._journal.append(new, self._tensors_end)
        self._committed = len(self._tensors)
        self._last_commit = now

    # -- blobs ------------------------------------------------------------------------
    @property
    def position(self) -> int:
        return self._f.tell()

    def _pad_to(self, pos: int) -> None:
        here = self._f.tell()
        if pos > here:
            self._f.write(b"\0" * (pos - here))

    def add_blob(self, data: bytes | bytearray | memoryview, stage: int = 0) -> BlobRef:
        """Append one blob at the next aligned offset; return its reference."""
        if not len(data):
            raise FormatError("blobs must not be empty")
        offset = self._f.tell()
        with output_errors(self.path):
            self._f.write(data)
            self._pad_to(layout.align_up(self._f.tell(), self.header.alignment))
        return BlobRef(offset, len(data), layout.checksum(data), stage)

    # -- entries ----------------------------------------------------------------------
    def _claim(self, name: str) -> None:
        names.check_tensor_name(name)
        if name in self._names:
            raise FormatError(f"tensor {name!r} was already written to this archive")
        self._names.add(name)

    def add_tensor(self, entry: TensorEntry) -> None:
        """Record a tensor whose blobs were written with ``add_blob``."""
        self._claim(entry.name)
        self._tensors.append(entry)
        if entry.alias_of is None:
            self._tensors_end = self._f.tell()

    def add_attachment(self, name: str, data: bytes, *, compress: bool = True) -> None:
        """Store a whole non-tensor file; zstd-compressed when that makes it smaller."""
        self._attachment_names.add(name)  # safe, and no clash with those before
        encoding, payload = "raw", data
        if compress and data:
            packed = zstandard.ZstdCompressor(level=ATTACHMENT_ZSTD_LEVEL).compress(data)
            if len(packed) < len(data):
                encoding, payload = "zstd", packed
        if not payload:  # an empty file still needs a (non-empty) blob: store it as zstd
            encoding, payload = "zstd", zstandard.ZstdCompressor().compress(b"")
        blob = self.add_blob(payload)
        self._attachments.append(AttachmentEntry(name, len(data), encoding, blob))

    @property
    def tensors(self) -> list[TensorEntry]:
        return list(self._tensors)

    # -- finishing ----------------------------------------------------------------------
    def close(self) -> Path:
        """Write index and footer, fsync, and atomically move the file into place."""
        if self._closed:
            return self.path
        try:
            with output_errors(self.path):
                data_end = self._f.tell()
                index = Index(tuple(self._tensors), tuple(self._attachments), self.metadata,
                              data_end)
                write_index_and_footer(self._f, index)
                self._f.flush()
                # private (0600) while written; published with the mode any new file gets
                os.fchmod(self._f.fileno(), 0o666 & ~umask())
                os.fsync(self._f.fileno())
                self._f.close()
                check_output_file(self.path)  # nothing swapped in meanwhile (we hold the lock)
                check_still_new(self.path, self._new)
                os.replace(self.tmp_path, self.path)
                fsync_dir(self.path.parent)
            if self._journal is not None:
                self._journal.close()
                journal_file.remove(self.journal_path)
        except BaseException:
            self.abort(keep_resumable=True)
            raise
        self._closed = True
        self._lock.release()
        return self.path

    def abort(self, *, keep_resumable: bool = False) -> None:
        """Drop the temporary file; the destination is left as it was.

        With ``keep_resumable`` and a journal, finished tensors are journaled first and
        the partial file and journal are kept if any tensor is in the journal."""
        self._closed = True
        try:
            if keep_resumable and self._fingerprint is not None:
                with contextlib.suppress(Exception):
                    self.commit(force=True)
            with contextlib.suppress(Exception):
                self._f.close()
            if self._journal is not None:
                self._journal.close()
                if keep_resumable and os.path.lexists(self.tmp_path):
                    return
                journal_file.remove(self.journal_path)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.tmp_path)
        finally:
            self._lock.release()

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort(keep_resumable=True)


def write_index_and_footer(f: Any, index: Index) -> layout.Footer:
    """Write ``index`` at the current (aligned) position of ``f`` and the footer after it."""
    data = index.pack()
    if len(data) > layout.MAX_INDEX_BYTES:
        raise LlmcError(f"index would be {len(data)} bytes, over the format's 1 GiB limit")
    footer = layout.Footer(f.tell(), len(data), layout.checksum(data))
    f.write(data)
    f.write(footer.pack())
    return footer


def append_metadata_update(
    path: str | os.PathLike[str], *, metadata: dict[str, Any] | None = None,
    tensors: Iterable[TensorEntry] | None = None,
) -> None:
    """Replace the file's metadata (and optionally tensor entries' quant/rd records)
    by appending a new index and footer; the data region is not rewritten.

    The old index and footer stay in place (recorded as ``previous``) so the file stays
    fully covered by checksums; ``llmc verify`` walks that chain. The file is locked
    (``OutputLock``) meanwhile, like every write: a pack or another update of it fails at
    once instead of interleaving with this append.
    """
    with OutputLock(Path(path)):
        _append_metadata_update(path, metadata, tensors)


def _append_metadata_update(path: str | os.PathLike[str], metadata: dict[str, Any] | None,
                            tensors: Iterable[TensorEntry] | None) -> None:
    from llmc_format.container.reader import Reader  # local: reader imports nothing of us

    with Reader(path) as r:
        old = r.index
        old_footer = r.footer
        alignment = r.header.alignment
    new_tensors = tuple(tensors) if tensors is not None else old.tensors
    if [t.name for t in new_tensors] != [t.name for t in old.tensors] or any(
        (a.blobs, a.pipeline) != (b.blobs, b.pipeline) for a, b in zip(new_tensors, old.tensors,
                                                                        strict=True)
    ):
        raise FormatError("a metadata update may change metadata, not tensor data or order")
    new = Index(new_tensors, old.attachments,
                old.metadata if metadata is None else metadata, old.data_end,
                PreviousIndex(old_footer.index_offset, old_footer.index_length,
                              old_footer.index_checksum))
    with open(path, "r+b") as f:
        f.seek(0, os.SEEK_END)
        end = f.tell()
        pad = layout.align_up(end, alignment) - end
        f.write(b"\0" * pad)
        write_index_and_footer(f, new)
        f.flush()
        os.fsync(f.fileno())

