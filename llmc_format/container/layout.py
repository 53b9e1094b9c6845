"""The fixed byte layout of a .llmc file: magic, header, footer, feature bits, limits.

This module is the one place these constants live; ``spec/FORMAT.md`` mirrors it and
the two change together. All integers are little-endian. Checksums are XXH3-64 (seed 0).

    offset 0          header (64 bytes)
    64 .. data_start  zero padding up to the alignment
    data_start        data region: blobs, each at an aligned offset, zero padding between
    data_end          (only after a metadata update) superseded index+footer records
    index_offset      index (msgpack), followed directly by
    file_size - 48    footer (48 bytes)
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import xxhash

from llmc_format.errors import ChecksumError, FormatError, TruncatedError, VersionError

#: PNG-style: a non-ASCII first byte catches 7-bit transfers, CR LF catches newline
#: conversion in either direction, ^Z stops a DOS `type`, the final LF catches LF->CRLF.
#: "LMC" = LLM Codec. Exactly 8 bytes: 89 4C 4D 43 0D 0A 1A 0A.
MAGIC = b"\x89LMC\r\n\x1a\n"
assert len(MAGIC) == 8
MAJOR_VERSION = 1
MINOR_VERSION = 0

HEADER_SIZE = 64
FOOTER_SIZE = 48
DEFAULT_ALIGNMENT = 64
MIN_ALIGNMENT = 8
MAX_ALIGNMENT = 4096

#: Required-feature bits this reader understands (none defined in 1.0). A reader refuses a
#: file that sets any other required bit.
KNOWN_REQUIRED_FEATURES = 0
#: Optional-feature bits are informational; unknown ones are ignored.
KNOWN_OPTIONAL_FEATURES = 0

# Limits a reader enforces before allocating (spec/FORMAT.md §8).
MAX_NAME_BYTES = 1024
#: attachments whose name starts with this are the archive's own records (e.g. the GGUF
#: layout record), not files of the model: unpack and loaders do not write them out
INTERNAL_ATTACHMENT_PREFIX = ".llmc/"
MAX_RANK = 16
MAX_PIPELINE_STAGES = 8
MAX_TENSOR_BYTES = 2**62
MAX_INDEX_BYTES = 1 << 30
MAX_UPDATE_CHAIN = 4096
#: A zstd frame in a file (exact plane, attachment) has Window_Size <= max(its declared
#: content size, 2**17): decoding it never needs more memory than its output or 128 KiB,
#: and every reader accepts exactly the same frames (spec/FORMAT.md §7.1, §5.5).
ZSTD_WINDOW_FLOOR = 1 << 17

#: msgpack maps and arrays an index may hold: one per this many index bytes, plus a slack
#: for small files. An empty map costs one byte but ~72 bytes of Python memory, so without
#: the bound a 50 MB index of empty maps took 3.6 GB to decode. Indexes llmc writes spend
#: 26-68 bytes per container (a tensor entry with one blob is ~7 containers in ~250 bytes),
#: so 16 leaves them a 1.6x margin at the densest and halves the worst case against 8: a
#: 4.2 MB index of the most empty maps allowed peaks at 26 MiB traced (was 44 MiB, 300k
#: maps grew the fuzzer's RSS by 189 MB) — ``python tools/index_budget.py``.
INDEX_BYTES_PER_CONTAINER = 16
INDEX_CONTAINER_SLACK = 1 << 16
#: deepest nesting of the free-form maps (metadata, quant, rd, codec configs): readers
#: walk them recursively (JSON output, rendering); real ones nest 3-4 levels
MAX_NESTING = 32


def zstd_window_ok(window_size: int, content_size: int) -> bool:
    """Whether a zstd frame's window is within what the format allows (``ZSTD_WINDOW_FLOOR`` above)."""
    return window_size <= max(content_size, ZSTD_WINDOW_FLOOR)


# header: magic, major, minor, header_size, required, optional, alignment, reserved(20)
_HEADER = struct.Struct("<8sHHIQQI20x")
# footer: index_offset, index_length, index_checksum, reserved(8), footer_checksum, magic
_FOOTER_BODY = struct.Struct("<QQQ8x")
assert _HEADER.size + 8 == HEADER_SIZE
assert _FOOTER_BODY.size + 16 == FOOTER_SIZE


def checksum(data: bytes | bytearray | memoryview) -> int:
    """The format's checksum: XXH3-64 with seed 0, as an unsigned 64-bit integer."""
    return xxhash.xxh3_64_intdigest(data)


def align_up(n: int, alignment: int) -> int:
    return (n + alignment - 1) // alignment * alignment


def valid_alignment(a: int) -> bool:
    return MIN_ALIGNMENT <= a <= MAX_ALIGNMENT and a & (a - 1) == 0


@dataclass(frozen=True)
class Header:
    major: int = MAJOR_VERSION
    minor: int = MINOR_VERSION
    required_features: int = 0
    optional_features: int = 0
    alignment: int = DEFAULT_ALIGNMENT

    @property
    def data_start(self) -> int:
        return align_up(HEADER_SIZE, self.alignment)

    def pack(self) -> bytes:
        body = _HEADER.pack(
            MAGIC, self.major, self.minor, HEADER_SIZE, self.required_features,
            self.optional_features, self.alignment,
        )
        return body + struct.pack("<Q", checksum(body))

    @classmethod
    def unpack(cls, data: bytes) -> Header:
        """Parse and validate the 64-byte header (magic, checksum, version, features)."""
        if len(data) < HEADER_SIZE:
            if MAGIC.startswith(data[:8]):
                raise TruncatedError(f"file is {len(data)} bytes, shorter than the 64-byte header")
            raise FormatError("not an llmc file (bad magic at offset 0)")
        magic, major, minor, hsize, req, opt, align = _HEADER.unpack_from(data)
        if magic != MAGIC:
            raise FormatError(_describe_bad_magic(magic, 0))
        (stored,) = struct.unpack_from("<Q", data, 56)
        if stored != checksum(data[:56]):
            raise ChecksumError("header checksum mismatch at offset 56: the header is corrupt")
        if major != MAJOR_VERSION:
            raise VersionError(
                f"file format version {major}.{minor} needs a newer reader "
                f"(this one reads {MAJOR_VERSION}.x)"
            )
        if any(data[36:56]):
            raise FormatError("header reserved bytes 36..55 are not zero")
        if hsize != HEADER_SIZE:
            raise FormatError(f"header size {hsize} at offset 12 is not {HEADER_SIZE}")
        unknown = req & ~KNOWN_REQUIRED_FEATURES
        if unknown:
            raise VersionError(
                f"file needs unknown required features 0x{unknown:x} (header offset 16); "
                "upgrade llmc to read it"
            )
        if not valid_alignment(align):
            raise FormatError(
                f"alignment {align} at offset 32 is not a power of two in "
                f"[{MIN_ALIGNMENT}, {MAX_ALIGNMENT}]"
            )
        return cls(major, minor, req, opt, align)


@dataclass(frozen=True)
class Footer:
    index_offset: int
    index_length: int
    index_checksum: int

    def pack(self) -> bytes:
        body = _FOOTER_BODY.pack(self.index_offset, self.index_length, self.index_checksum)
        return body + struct.pack("<Q", checksum(body)) + MAGIC

    @classmethod
    def unpack(cls, data: bytes, at: int) -> Footer:
        """Parse a footer found at file offset ``at`` (for messages)."""
        if len(data) != FOOTER_SIZE:
            raise TruncatedError(f"footer at offset {at} is {len(data)} bytes, expected {FOOTER_SIZE}")
        if data[40:] != MAGIC:
            raise TruncatedError(
                f"no footer magic at offset {at + 40}: the file is truncated or not an llmc file"
            )
        (stored,) = struct.unpack_from("<Q", data, 32)
        if stored != checksum(data[:32]):
            raise ChecksumError(f"footer checksum mismatch at offset {at + 32}: the footer is corrupt")
        if any(data[24:32]):
            raise FormatError(f"footer reserved bytes at offset {at + 24} are not zero")
        off, length, csum = _FOOTER_BODY.unpack_from(data)
        return cls(off, length, csum)


def _describe_bad_magic(magic: bytes, at: int) -> str:
    if magic.replace(b"\r\n", b"\n") != magic or b"LMC" in magic:
        return (
            f"damaged llmc magic at offset {at}: the file was probably transferred in text "
            "mode (newline conversion) or truncated"
        )
    return f"not an llmc file (bad magic at offset {at})"


def is_internal_attachment(name: str) -> bool:
    """Whether attachment ``name`` is an archive record rather than a model file."""
    return name.startswith(INTERNAL_ATTACHMENT_PREFIX)
