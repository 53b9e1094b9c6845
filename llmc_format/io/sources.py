"""``open_source``: pick the reader for a path (file or Hugging Face directory).

Each file format is a ``SourceFormat`` in ``SOURCE_FORMATS`` (like codecs in their
registry): its name, the ``Source`` class that reads it (one module per format, imported
only when a file of that format is opened: torch and transformers cost seconds), the
extensions it is known by and a test on its first bytes. Extensions decide first because
they are what the user sees; a file with an unknown extension is recognised by its first
bytes (GGUF magic, safetensors header, zip = torch), in registration order. Adding a
format: a module with its ``Source`` class and one ``register_source`` call here
(docs/architecture.md).
"""

from __future__ import annotations

import importlib
import os
import struct
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from llmc_format.errors import SourceError
from llmc_format.io.base import Source, require_exists
from llmc_format.io.hf_dir import HfDirectory, find_weight_files

#: bytes read from the start of a file for ``SourceFormat.sniff``
HEAD_BYTES = 16


@dataclass(frozen=True)
class SourceFormat:
    """A model file format ``open_source`` reads."""

    name: str
    #: ``"module:Class"`` of its ``Source``, called with the file's path
    reader: str
    #: extensions (lower case, with the dot) that name the format
    suffixes: tuple[str, ...]
    #: whether a file is of this format, from its first ``HEAD_BYTES`` bytes (and its path)
    sniff: Callable[[bytes, Path], bool]

    def open(self, path: Path) -> Source:
        module, _, attr = self.reader.partition(":")
        source: Source = getattr(importlib.import_module(module), attr)(path)
        return source


SOURCE_FORMATS: dict[str, SourceFormat] = {}


def register_source(fmt: SourceFormat) -> SourceFormat:
    """Make ``fmt`` one of the formats ``open_source`` recognises (replacing one of its name)."""
    SOURCE_FORMATS[fmt.name] = fmt
    return fmt


def _is_gguf(head: bytes, path: Path) -> bool:
    return head[:4] == b"GGUF"


def _is_safetensors(head: bytes, path: Path) -> bool:
    """An 8-byte little-endian header length that fits the file, then the JSON's ``{``."""
    if len(head) < 9 or head[8:9] != b"{":
        return False
    (header_len,) = struct.unpack("<Q", head[:8])
    return 2 <= header_len <= path.stat().st_size - 8


def _is_torch_zip(head: bytes, path: Path) -> bool:
    return zipfile.is_zipfile(path)


def _is_llmc(head: bytes, path: Path) -> bool:
    from llmc_format.container.layout import MAGIC

    return head[:len(MAGIC)] == MAGIC


register_source(SourceFormat("gguf", "llmc_format.io.gguf_source:GgufFile", (".gguf",), _is_gguf))
register_source(SourceFormat("safetensors", "llmc_format.io.safetensors_source:SafetensorsFile",
                             (".safetensors",), _is_safetensors))
register_source(SourceFormat("torch", "llmc_format.io.torch_source:TorchFile",
                             (".pt", ".pth", ".bin", ".ckpt"), _is_torch_zip))
# an archive (a lossless master copy, say) packs again like any model: decoded tensors,
# its attachments, and the ggml blocks of a GGUF's tensors kept as they are
register_source(SourceFormat("llmc", "llmc_format.io.archive_source:ArchiveSource", (".llmc",),
                             _is_llmc))


def open_source(path: str | os.PathLike[str]) -> Source:
    """The ``Source`` for a model file or directory; ``SourceError`` naming it otherwise."""
    p = require_exists(path)
    if p.is_dir():
        return _open_directory(p)
    if not p.is_file():
        raise SourceError(f"{p}: not a regular file or directory")
    return format_of(p).open(p)


def _open_directory(directory: Path) -> Source:
    try:
        find_weight_files(directory)
    except SourceError:
        ggufs = sorted(f for f in directory.glob("*.gguf") if f.is_file())
        if len(ggufs) == 1:
            return SOURCE_FORMATS["gguf"].open(ggufs[0])
        if len(ggufs) > 1:
            names = ", ".join(f.name for f in ggufs)
            raise SourceError(
                f"{directory.name}: holds several GGUF files ({names}); pass one of them"
            ) from None
        raise
    return HfDirectory(directory)


def format_of(path: Path) -> SourceFormat:
    """The format of the file ``path``: by extension, else by its first bytes."""
    suffix = path.suffix.lower()
    for fmt in SOURCE_FORMATS.values():
        if suffix in fmt.suffixes:
            return fmt
    with path.open("rb") as f:
        head = f.read(HEAD_BYTES)
    for fmt in SOURCE_FORMATS.values():
        if fmt.sniff(head, path):
            return fmt
    known = ", ".join(s for fmt in SOURCE_FORMATS.values() for s in fmt.suffixes)
    raise SourceError(
        f"{path.name}: unknown model file format (expected {known}, a file of one of those "
        f"formats under another name, or a Hugging Face directory)"
    )
