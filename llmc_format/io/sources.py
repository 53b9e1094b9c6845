"""``open_source``: pick the reader for a path (file or Hugging Face directory).

Extensions decide first because they are what the user sees; a file with an unknown
extension is recognised by its first bytes (GGUF magic, zip = torch, safetensors header).
"""

from __future__ import annotations

import os
import struct
import zipfile
from pathlib import Path

from llmc_format.errors import SourceError
from llmc_format.io.base import Source, require_exists
from llmc_format.io.hf_dir import HfDirectory, find_weight_files
from llmc_format.io.safetensors_source import SafetensorsFile

_TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")


def open_source(path: str | os.PathLike[str]) -> Source:
    """The ``Source`` for a model file or directory; ``SourceError`` naming it otherwise."""
    p = require_exists(path)
    if p.is_dir():
        return _open_directory(p)
    if not p.is_file():
        raise SourceError(f"{p}: not a regular file or directory")
    return _open_file(p, _format_of(p))


def _open_directory(directory: Path) -> Source:
    try:
        find_weight_files(directory)
    except SourceError:
        ggufs = sorted(f for f in directory.glob("*.gguf") if f.is_file())
        if len(ggufs) == 1:
            return _open_file(ggufs[0], "gguf")
        if len(ggufs) > 1:
            names = ", ".join(f.name for f in ggufs)
            raise SourceError(
                f"{directory.name}: holds several GGUF files ({names}); pass one of them"
            ) from None
        raise
    return HfDirectory(directory)


def _open_file(path: Path, fmt: str) -> Source:
    if fmt == "safetensors":
        return SafetensorsFile(path)
    if fmt == "torch":
        from llmc_format.io.torch_source import TorchFile  # imports torch: only when needed

        return TorchFile(path)
    if fmt == "gguf":
        from llmc_format.io.gguf_source import GgufFile  # imports transformers: only when needed

        return GgufFile(path)
    raise SourceError(f"{path.name}: unknown model file format")


def _format_of(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        return "safetensors"
    if suffix == ".gguf":
        return "gguf"
    if suffix in _TORCH_SUFFIXES:
        return "torch"
    return _sniff(path)


def _sniff(path: Path) -> str:
    """Recognise a file by its first bytes; ``SourceError`` if nothing matches."""
    with path.open("rb") as f:
        head = f.read(9)
    if head[:4] == b"GGUF":
        return "gguf"
    if len(head) == 9 and head[8:9] == b"{":
        (header_len,) = struct.unpack("<Q", head[:8])
        if 2 <= header_len <= path.stat().st_size - 8:
            return "safetensors"
    if zipfile.is_zipfile(path):
        return "torch"
    raise SourceError(
        f"{path.name}: unknown model file format (expected .safetensors, .gguf, "
        f"a torch state dict, or a Hugging Face directory)"
    )
