"""Typed errors of llmc.

Every failure llmc reports on purpose is an ``LlmcError``; a caller (or the fuzzer)
treats any other exception escaping the library as a bug. Subclasses mix in the
stdlib type a caller would naturally catch (``ValueError``, ``FileNotFoundError``...),
as zarr-python does, so ``except ValueError`` keeps working too.

Messages say what was wrong and where: the tensor name and/or the byte offset.

Each class that a *reader* reports carries ``kind``, its name in the error taxonomy of
spec/FORMAT.md §8.1 (the names the conformance vectors' ``expect.error`` uses):

| kind                | class               | raised at           |
|---------------------|---------------------|---------------------|
| ``Truncated``       | TruncatedError      | open                |
| ``Malformed``       | FormatError         | open                |
| ``Checksum``        | ChecksumError       | open or decode      |
| ``Limit``           | LimitError          | open or decode      |
| ``UnsupportedVersion`` | VersionError     | open                |
| ``UnsupportedCodec``| UnknownCodecError   | decode              |
| ``Decode``          | CodecError          | decode              |
| ``DigestMismatch``  | DigestError         | decode (whole tensor) |

``Limit`` and the three at-open kinds are ``FormatError`` subclasses, ``UnsupportedCodec``
and ``DigestMismatch`` are ``CodecError`` ones, so ``except FormatError`` still catches
every "this file is bad at open" case. Errors that are not about a file's bytes (no such
file, bad usage, a source model that cannot be read) have no taxonomy name (``kind`` is
``""``).
"""

from __future__ import annotations

from typing import ClassVar


class LlmcError(Exception):
    """Base of every error llmc raises on purpose."""

    #: name of the error in the spec's taxonomy (spec/FORMAT.md §8.1); "" = not a file error
    kind: ClassVar[str] = ""


class FormatError(LlmcError, ValueError):
    """The file is not a well-formed .llmc archive (bad magic, bad structure, bad index)."""

    kind = "Malformed"


class TruncatedError(FormatError):
    """The file ends before a structure it declares."""

    kind = "Truncated"


class ChecksumError(FormatError):
    """Stored bytes do not match their recorded checksum: the file is corrupt."""

    kind = "Checksum"


class VersionError(FormatError):
    """The file needs a newer reader: future major version or unknown required feature."""

    kind = "UnsupportedVersion"


class LimitError(FormatError):
    """A declared size, count or shape exceeds what the file or the reader's limits allow."""

    kind = "Limit"


class CodecError(LlmcError, ValueError):
    """A codec could not encode or decode (unknown id, bad config, stream that lies)."""

    kind = "Decode"


class UnknownCodecError(CodecError, KeyError):
    """No codec is registered under this id."""

    kind = "UnsupportedCodec"

    def __init__(self, codec_id: str, where: str = "") -> None:
        self.codec_id = codec_id
        suffix = f" (in {where})" if where else ""
        super().__init__(f"unknown codec id {codec_id!r}{suffix}")

    def __str__(self) -> str:  # KeyError would repr() the message otherwise
        return str(self.args[0])


class DigestError(CodecError):
    """A whole tensor decoded, but its bytes differ from the writer's ``digest.decoded``:
    a non-conformant decoder, or a config that is wrong yet intact under its checksum."""

    kind = "DigestMismatch"


class SignatureError(LlmcError, ValueError):
    """A signature does not verify: the archive's bytes, the signature or the key differ
    from what was signed (authenticity, not a format error: ``kind`` is "")."""


class BitstreamError(CodecError):
    """A stored video blob is not one well-formed bitstream (NAL/OBU structure, trailing bytes).

    FFmpeg's decoders may still decode such a blob; other conforming decoders may not.
    """


class EncoderRefusedError(CodecError):
    """An external encoder ran and exited with an error on a frame (not a timeout, not a
    missing encoder): e.g. libvvenc at the finest QPs on noise-like samples."""

    kind = ""  # about this encoder and these samples, not about a file


class EncoderMissingError(CodecError, RuntimeError):
    """An external encoder (FFmpeg binary or one of its encoders) is not available."""

    kind = ""  # a fact about this machine, not about a file


class SourceError(LlmcError, ValueError):
    """An input model/file could not be read or holds something llmc cannot store."""


class InputError(LlmcError, ValueError):
    """An input path is not a regular file llmc can read: a directory, FIFO, device or
    socket given where a file is expected (refused at open: a FIFO would block forever)."""


class ArchiveNotFoundError(LlmcError, FileNotFoundError):
    """The archive (or source) path does not exist."""


class TensorNotFoundError(LlmcError, KeyError):
    """The archive holds no tensor of that name."""

    def __str__(self) -> str:
        return str(self.args[0])


class TargetError(LlmcError, ValueError):
    """A size / bits-per-weight / quality target cannot be met or is malformed."""


class UsageError(LlmcError, ValueError):
    """An option or argument is invalid or contradicts another (``llmc`` exits 2).

    Raised before any work, so nothing is written and nothing is left behind.
    """


class OutputError(LlmcError, OSError):
    """An output cannot be written safely: it is a special file or the source, another
    llmc process is writing it, or the disk is full (the message names the path)."""

    def __str__(self) -> str:  # OSError would format (errno, strerror) otherwise
        return str(self.args[0])


def by_kind() -> dict[str, type[LlmcError]]:
    """Taxonomy name -> the class raised for it (for the conformance vectors' tests)."""
    out: dict[str, type[LlmcError]] = {}
    todo: list[type[LlmcError]] = [LlmcError]
    while todo:
        cls = todo.pop()
        if cls.kind and cls.kind not in out:
            out[cls.kind] = cls
        todo.extend(cls.__subclasses__())
    return out
