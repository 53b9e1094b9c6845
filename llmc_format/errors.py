"""Typed errors of llmc.

Every failure llmc reports on purpose is an ``LlmcError``; a caller (or the fuzzer)
treats any other exception escaping the library as a bug. Subclasses mix in the
stdlib type a caller would naturally catch (``ValueError``, ``FileNotFoundError``...),
as zarr-python does, so ``except ValueError`` keeps working too.

Messages say what was wrong and where: the tensor name and/or the byte offset.
"""

from __future__ import annotations


class LlmcError(Exception):
    """Base of every error llmc raises on purpose."""


class FormatError(LlmcError, ValueError):
    """The file is not a well-formed .llmc archive (bad magic, bad structure, bad index)."""


class TruncatedError(FormatError):
    """The file ends before a structure it declares."""


class ChecksumError(FormatError):
    """Stored bytes do not match their recorded checksum: the file is corrupt."""


class VersionError(FormatError):
    """The file needs a newer reader: future major version or unknown required feature."""


class LimitError(FormatError):
    """A declared size, count or shape exceeds what the file or the reader's limits allow."""


class CodecError(LlmcError, ValueError):
    """A codec could not encode or decode (unknown id, bad config, stream that lies)."""


class UnknownCodecError(CodecError, KeyError):
    """No codec is registered under this id."""

    def __init__(self, codec_id: str, where: str = "") -> None:
        self.codec_id = codec_id
        suffix = f" (in {where})" if where else ""
        super().__init__(f"unknown codec id {codec_id!r}{suffix}")

    def __str__(self) -> str:  # KeyError would repr() the message otherwise
        return str(self.args[0])


class BitstreamError(CodecError):
    """A stored video blob is not one well-formed bitstream (NAL/OBU structure, trailing bytes).

    FFmpeg's decoders may still decode such a blob; other conforming decoders may not.
    """


class EncoderMissingError(CodecError, RuntimeError):
    """An external encoder (FFmpeg binary or one of its encoders) is not available."""


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


class OutputError(LlmcError, OSError):
    """An output cannot be written safely: it is a special file or the source, another
    llmc process is writing it, or the disk is full (the message names the path)."""

    def __str__(self) -> str:  # OSError would format (errno, strerror) otherwise
        return str(self.args[0])
