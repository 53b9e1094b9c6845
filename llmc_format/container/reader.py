"""Random-access reader of .llmc files.

Opening reads the header, the footer and the index only, and validates them all
(spec/FORMAT.md §8) before anything is trusted. ``read_blob`` reads one blob
plus its alignment padding with a single positioned read (``os.pread``: no shared file
position, so one Reader serves many threads) and checks its checksum and that the
padding is zero. Nothing here knows about codecs.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import zstandard

from llmc_format.container import layout
from llmc_format.container.index import (
    AttachmentEntry,
    BlobRef,
    Index,
    TensorEntry,
    parse_index,
    unpack_index_bytes,
)
from llmc_format.errors import (
    ArchiveNotFoundError,
    ChecksumError,
    CodecError,
    FormatError,
    InputError,
    LimitError,
    LlmcError,
    TensorNotFoundError,
    TruncatedError,
)

#: A zstd frame of L bytes decodes to at most this many times L bytes: a block yields at
#: most 128 KiB and costs at least 4 bytes (3-byte header + 1 RLE byte; RFC 8878
#: §3.1.1.2). Sizes declared beyond it are lies, refused before anything is allocated.
ZSTD_MAX_EXPANSION = 1 << 15


class Reader:
    """An open archive. ``verify_checksums=False`` skips blob checksums (salvage only)."""

    def __init__(self, path: str | os.PathLike[str], *, verify_checksums: bool = True) -> None:
        self.path = Path(path)
        self.verify_checksums = verify_checksums
        self._fd = open_regular(self.path, "an llmc file")
        try:
            self.file_size = os.fstat(self._fd).st_size
            self.header, self.footer, self.index = self._open()
        except LlmcError as exc:
            self.close()
            # which file: a command may read two archives (verify --against, pack of one)
            if exc.args and isinstance(exc.args[0], str) and \
                    not exc.args[0].startswith(f"{self.path}:"):
                exc.args = (f"{self.path}: {exc.args[0]}", *exc.args[1:])
            raise
        except BaseException:
            self.close()
            raise
        self._tensors = {t.name: t for t in self.index.tensors}
        self._attachments = {a.name: a for a in self.index.attachments}
        #: stored tensor name -> how many aliases name it (each alias is another copy a
        #: caller may decode or write: it counts toward the expansion limit)
        self.alias_counts: Counter[str] = Counter(
            t.alias_of for t in self.index.tensors if t.alias_of is not None)

    def _open(self) -> tuple[layout.Header, layout.Footer, Index]:
        header = layout.Header.unpack(self._pread(0, min(self.file_size, layout.HEADER_SIZE)))
        data_start = header.data_start
        if self.file_size < data_start + layout.FOOTER_SIZE:
            raise TruncatedError(f"{self.path}: file is {self.file_size} bytes, too short for "
                                 "header, index and footer")
        pad = self._pread(layout.HEADER_SIZE, data_start - layout.HEADER_SIZE)
        if any(pad):
            raise ChecksumError(f"non-zero padding between header and data at offset "
                              f"{layout.HEADER_SIZE + _first_nonzero(pad)}")
        footer_at = self.file_size - layout.FOOTER_SIZE
        footer = layout.Footer.unpack(self._pread(footer_at, layout.FOOTER_SIZE), footer_at)
        if footer.index_offset < data_start or footer.index_offset % header.alignment:
            raise FormatError(f"footer index offset {footer.index_offset} is not an aligned "
                              f"offset after the data start {data_start}")
        if footer.index_offset + footer.index_length != footer_at:
            raise FormatError(
                f"footer says the index spans {footer.index_offset}+{footer.index_length}, "
                f"but the footer starts at {footer_at}"
            )
        if footer.index_length > layout.MAX_INDEX_BYTES:
            raise LimitError(f"index of {footer.index_length} bytes exceeds the 1 GiB limit")
        raw = self._pread(footer.index_offset, footer.index_length)
        if layout.checksum(raw) != footer.index_checksum:
            raise ChecksumError(f"index checksum mismatch (index at offset "
                                f"{footer.index_offset}, {footer.index_length} bytes)")
        index = parse_index(unpack_index_bytes(raw), data_start=data_start,
                            index_offset=footer.index_offset, alignment=header.alignment)
        return header, footer, index

    # -- low level ------------------------------------------------------------------------
    def _pread(self, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0 or offset + length > self.file_size:
            raise TruncatedError(f"{self.path}: read of {length} bytes at offset {offset} "
                                 f"goes past the end of the file ({self.file_size} bytes)")
        chunks = []
        while length:
            chunk = os.pread(self._fd, length, offset)
            if not chunk:
                raise TruncatedError(f"{self.path}: file shrank while reading offset {offset}")
            chunks.append(chunk)
            offset += len(chunk)
            length -= len(chunk)
        return b"".join(chunks) if len(chunks) != 1 else chunks[0]

    def read_blob(self, ref: BlobRef, label: str = "") -> bytes:
        """The blob's bytes, checksum-verified, with its trailing padding checked zero."""
        padded = layout.align_up(ref.end, self.header.alignment) - ref.offset
        raw = self._pread(ref.offset, padded)
        data = raw[: ref.length]
        if any(raw[ref.length:]):
            raise ChecksumError(f"{label or 'blob'}: non-zero padding after the blob at "
                                f"offset {ref.end}")
        if self.verify_checksums and layout.checksum(data) != ref.checksum:
            raise ChecksumError(f"{label or 'blob'}: checksum mismatch in the blob at offset "
                                f"{ref.offset} ({ref.length} bytes): the file is corrupt")
        return data

    def read_range(self, offset: int, length: int) -> bytes:
        return self._pread(offset, length)

    # -- entries ----------------------------------------------------------------------------
    def keys(self) -> list[str]:
        return [t.name for t in self.index.tensors]

    def tensor(self, name: str) -> TensorEntry:
        try:
            return self._tensors[name]
        except KeyError:
            import difflib

            close = difflib.get_close_matches(name, list(self._tensors), n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise TensorNotFoundError(f"no tensor named {name!r} in {self.path}{hint}") from None

    def resolve(self, name: str) -> TensorEntry:
        """The entry holding the data of ``name`` (follows ``alias_of``)."""
        t = self.tensor(name)
        return self._tensors[t.alias_of] if t.alias_of is not None else t

    @property
    def metadata(self) -> dict[str, Any]:
        return self.index.metadata

    def attachment_names(self) -> list[str]:
        return list(self._attachments)

    def attachments(self) -> Iterator[AttachmentEntry]:
        return iter(self.index.attachments)

    def read_attachment(self, name: str) -> bytes:
        try:
            a = self._attachments[name]
        except KeyError:
            raise TensorNotFoundError(f"no attachment named {name!r} in {self.path}") from None
        data = self.read_blob(a.blob, f"attachment {name!r}")
        if a.encoding == "zstd":
            data = _unzstd(data, a.size, f"attachment {name!r}")
        if len(data) != a.size:
            raise CodecError(f"attachment {name!r}: decoded {len(data)} bytes, index says "
                             f"{a.size}")
        return data

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        fd = getattr(self, "_fd", -1)
        if fd >= 0:
            os.close(fd)


def open_regular(path: str | os.PathLike[str], what: str = "a file") -> int:
    """A read-only descriptor of ``path``, which must be a regular file.

    Opened non-blocking first (a FIFO would block ``open`` until a writer appears), then
    checked with ``fstat`` on the descriptor itself (no window between a check and the
    open): a directory, FIFO, device or socket is an ``InputError``.
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise ArchiveNotFoundError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{path} is a directory, not {what}") from None
    except OSError as exc:  # a socket cannot be opened at all (ENXIO): say what it is
        with contextlib.suppress(OSError):
            mode = os.stat(path).st_mode
            if not stat.S_ISREG(mode):
                raise InputError(f"{path} is {_kind(mode)}, not {what}") from None
        raise LlmcError(f"{path}: cannot open: {exc.strerror}") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise InputError(f"{path} is {_kind(mode)}, not {what}")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _kind(mode: int) -> str:
    """What a non-regular file is, for messages."""
    return ("a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode)
            else "a socket" if stat.S_ISSOCK(mode) else "a device"
            if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a regular file")


def _unzstd(data: bytes, size: int, what: str) -> bytes:
    """Decompress one zstd frame that must yield ``size`` bytes, allocating no more than
    the frame can justify (a lying size or frame header is an error, not an allocation)."""
    if size > ZSTD_MAX_EXPANSION * len(data):
        raise LimitError(f"{what}: index says {size} bytes, more than {len(data)} bytes of "
                         "zstd data can hold")
    try:
        params = zstandard.get_frame_parameters(data)
        if params.content_size != size:  # CONTENTSIZE_UNKNOWN included: it must be declared
            raise CodecError(f"{what}: zstd frame declares {params.content_size} bytes, "
                             f"index says {size}")
        if params.dict_id != 0 or not layout.zstd_window_ok(params.window_size, size):
            raise CodecError(f"{what}: zstd frame needs a dictionary or a window of "
                             f"{params.window_size} bytes (the format allows "
                             f"max({size}, {layout.ZSTD_WINDOW_FLOOR}))")
        return zstandard.ZstdDecompressor().decompress(data, max_output_size=size,
                                                       allow_extra_data=False)
    except zstandard.ZstdError as exc:
        raise CodecError(f"{what}: bad zstd data: {exc}") from None


def _first_nonzero(b: bytes) -> int:
    return next(i for i, x in enumerate(b) if x)
