"""The output formats ``unpack`` writes (``--format``), as a registry like the sources'.

Each format is a ``SinkFormat`` in ``SINK_FORMATS``: its name (the ``--format`` value),
the function that writes it (one module per format, named as ``"module:function"`` and
imported only when used: torch costs seconds at start-up), the names of the weight files
it writes, whether it can be sharded, and optionally a ``native`` writer that restores the
file the archive was packed from byte for byte. Built in:

- ``safetensors`` (``io/safetensors_sink.py``): what ``save_pretrained`` writes;
- ``pt`` (``io/torch_sink.py``): ``pytorch_model.bin``, what it wrote before;
- ``gguf`` (``io/gguf_sink.py``): ``model.gguf``, the packed GGUF itself when the archive
  holds it losslessly, else plain float tensors.

Shared by all of them: ``io/sink_base.py`` (temporary names, publishing, alias checks,
one-shard-at-a-time checkpoints) and ``remove_stale`` here, which removes weight files of
*any* registered format left from an earlier run, so a loader cannot pick a stale one.
Attachments are written by ``io/attachments.py``. Adding a format: a module with a
``write(job: SinkJob) -> list[str]`` and one ``register_sink`` call here
(docs/architecture.md).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from llmc_format.errors import LlmcError

if TYPE_CHECKING:
    from llmc_format.container.reader import Reader


@dataclass
class SinkJob:
    """What a sink is asked to write: ``tensors`` yields exactly ``plan``'s tensors in order."""

    #: ``(name, dtype, shape)`` of every tensor to write, in the order ``tensors`` yields them
    plan: Sequence[tuple[str, str, tuple[int, ...]]]
    tensors: Iterator[tuple[str, np.ndarray]]
    #: the directory to write into (a private staging directory when ``unpack`` calls)
    out_dir: Path
    #: most bytes of tensor data per file, for formats with ``shards``; None: one file
    shard_size: int | None
    #: alias -> target: tied weights to write, each right after its target
    aliases: Mapping[str, str]
    #: the archive being unpacked, for formats that record where the model came from
    reader: Reader | None = None


@dataclass(frozen=True)
class SinkFormat:
    """An output format ``unpack`` writes."""

    #: the ``--format`` value
    name: str
    #: ``"module:function"`` writing a ``SinkJob``, returning the file names written
    writer: str
    #: the weight files it writes (full match on a file name): replaced or removed as stale
    files: re.Pattern[str]
    #: one line for ``--help`` and docs
    description: str
    #: whether ``shard_size`` applies (else it writes one file)
    shards: bool = False
    #: ``"module:function"`` ``(reader, out_dir, progress) -> list[str] | None`` writing the
    #: file the archive was packed from, byte for byte, when it can (None: it cannot)
    native: str | None = None

    def write(self, job: SinkJob) -> list[str]:
        files: list[str] = _load(self.writer)(job)
        return files

    def write_native(self, reader: Reader, out_dir: Path,
                     progress: Callable[[str, int, int], None] | None) -> list[str] | None:
        if self.native is None:
            return None
        files: list[str] | None = _load(self.native)(reader, out_dir, progress)
        return files

    def owns(self, name: str) -> bool:
        """Whether ``name`` is a weight file this format writes."""
        return bool(self.files.fullmatch(name))


def _load(ref: str) -> Callable[..., object]:
    module, _, attr = ref.partition(":")
    func: Callable[..., object] = getattr(importlib.import_module(module), attr)
    return func


SINK_FORMATS: dict[str, SinkFormat] = {}


class _Names(Sequence[str]):
    """The names of the registered formats as they are now (a format registered after
    this was imported is in it): what ``--format`` accepts and lists."""

    def __getitem__(self, i: int) -> str:  # type: ignore[override]  # no slices
        return list(SINK_FORMATS)[i]

    def __len__(self) -> int:
        return len(SINK_FORMATS)

    def __contains__(self, name: object) -> bool:
        return name in SINK_FORMATS

    def __repr__(self) -> str:
        return repr(tuple(SINK_FORMATS))


FORMAT_NAMES: Sequence[str] = _Names()


def register_sink(fmt: SinkFormat) -> SinkFormat:
    """Make ``fmt`` one of the formats ``unpack`` writes (replacing one of its name)."""
    SINK_FORMATS[fmt.name] = fmt
    return fmt


def sink_format(name: str) -> SinkFormat:
    """The registered format ``name``; ``LlmcError`` naming the choices otherwise."""
    if name not in SINK_FORMATS:
        raise LlmcError(f"format must be one of {', '.join(SINK_FORMATS)}, not {name!r}")
    return SINK_FORMATS[name]


register_sink(SinkFormat(
    "safetensors", "llmc_format.io.safetensors_sink:write",
    re.compile(r"model\.safetensors|model\.safetensors\.index\.json|model-\d{5}-of-\d{5}\.safetensors"),
    "what save_pretrained writes (model.safetensors, or shards and an index)", shards=True))
register_sink(SinkFormat(
    "pt", "llmc_format.io.torch_sink:write",
    re.compile(r"pytorch_model\.bin|pytorch_model\.bin\.index\.json|pytorch_model-\d{5}-of-\d{5}\.bin"),
    "pytorch_model.bin (a torch.save'd state dict, or shards and an index)", shards=True))
register_sink(SinkFormat(
    "gguf", "llmc_format.io.gguf_sink:write", re.compile(r"model\.gguf"),
    "model.gguf: the packed GGUF byte for byte when the archive holds it losslessly, else "
    "float tensors under the archive's names", native="llmc_format.io.gguf_sink:write_native"))


def remove_stale(out_dir: Path, keep: set[str]) -> None:
    """Remove weight files of ours (any registered format) not in ``keep``: transformers
    prefers safetensors over .bin, so a stale file of another format could shadow a fresh one."""
    for path in out_dir.iterdir():
        name = path.name
        ours = any(fmt.owns(name) for fmt in SINK_FORMATS.values())
        if ours and name not in keep and (path.is_file() or path.is_symlink()):
            path.unlink()
