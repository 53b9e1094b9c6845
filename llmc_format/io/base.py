"""What every input model looks like to llmc: a lazy, ordered stream of tensors.

A model may be larger than RAM, so a ``Source`` never loads tensors up front: it lists
``(name, SourceTensor)`` pairs whose dtype and shape are known from the file's header, and
a tensor's data is read only when its entry is called. Packing is then one pass, one
tensor in memory at a time (plus whatever the encoder holds).
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from llmc_format import dtypes
from llmc_format.codecs.base import ArraySpec
from llmc_format.errors import SourceError


@dataclass(frozen=True)
class NativeData:
    """A tensor as its source encodes it, when that encoding can be stored as is.

    A GGUF tensor's ggml blocks (Q4_1, Q8_0, ...) are not float values: storing the
    dequantized floats losslessly costs 2-8x the source's bytes. ``pipeline`` is the codec
    pipeline that keeps the source's bytes (array stages that map them to the entry's
    layout, then a final stage with ``encode_blocks``, e.g. ``ggml``); ``load`` returns
    those bytes (uint8). Decoding the pipeline gives exactly what the entry itself returns.
    """

    pipeline: tuple[dict[str, Any], ...]
    load: Callable[[], np.ndarray] = field(repr=False, compare=False)
    #: bytes ``load`` returns
    nbytes: int = 0


@dataclass(frozen=True)
class SourceTensor:
    """One tensor of a source: its name, dtype and shape, and how to read it.

    Calling the entry reads the data (the "loader"); everything else is free. The read
    array is checked against the declared dtype and shape, so a file whose header lies is
    reported as a ``SourceError`` rather than corrupting an archive.
    """

    name: str
    dtype: str
    shape: tuple[int, ...]
    _load: Callable[[], np.ndarray] = field(repr=False, compare=False)
    #: which file the tensor comes from (base name), for error messages
    file: str = ""
    #: the source's own encoding of the tensor, when llmc can store it losslessly as is
    native: NativeData | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        try:
            dtypes.to_numpy(self.dtype)
        except Exception:
            raise SourceError(
                f"{self.file or '?'}: tensor {self.name!r} has dtype {self.dtype!r}, "
                f"which llmc cannot store"
            ) from None

    @property
    def spec(self) -> ArraySpec:
        return ArraySpec(self.dtype, tuple(self.shape), self.name)

    @property
    def nbytes(self) -> int:
        return self.spec.nbytes

    def __call__(self) -> np.ndarray:
        array = self._load()
        want = dtypes.to_numpy(self.dtype)
        if array.dtype != want or tuple(array.shape) != tuple(self.shape):
            raise SourceError(
                f"{self.file or '?'}: tensor {self.name!r} read as {array.dtype}{list(array.shape)},"
                f" but its header declares {self.dtype}{list(self.shape)}"
            )
        return array


class Source(ABC):
    """An input model: tensors (lazily), the files that go with them, and a description.

    Sources hold open file handles (memory maps); use them as context managers or call
    ``close()``. Tensor order is fixed by the file, so packing is deterministic: its own
    order (a safetensors file's, which ``unpack`` reproduces), or for a GGUF, whose order
    nothing reproduces, natural order (``naming``: layers.2 before layers.10).
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    @abstractmethod
    def tensors(self) -> Iterator[tuple[str, SourceTensor]]:
        """``(name, entry)`` for every stored tensor, in file order; ``entry()`` reads it."""

    def specs(self) -> list[ArraySpec]:
        """Dtype and shape of every tensor, without reading any data (for planning)."""
        return [entry.spec for _, entry in self.tensors()]

    def attachments(self) -> Iterator[tuple[str, bytes]]:
        """``(relative posix path, bytes)`` of the non-tensor files of the model, sorted."""
        return iter(())

    def aliases(self) -> dict[str, str]:
        """``alias -> target``: names the model has that are the same data as ``target``.

        An alias is *not* yielded by ``tensors()``; its target is. The container can store
        the data once and record the alias.
        """
        return {}

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """Plain-data facts for the archive's "source" metadata (no absolute paths)."""

    def close(self) -> None:  # noqa: B027 - optional hook, most sources hold nothing to close
        """Release file handles; the source must not be used afterwards."""

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def file_facts(path: Path) -> dict[str, Any]:
    """``{"name", "size"}`` of a file: what ``describe()`` records of each input file."""
    return {"name": path.name, "size": path.stat().st_size}


def require_exists(path: str | os.PathLike[str]) -> Path:
    """The path as a ``Path``; ``SourceError`` naming it if it does not exist."""
    p = Path(path)
    if not p.exists():
        raise SourceError(f"{p}: no such file or directory")
    return p


def check_unique(entries: list[tuple[str, SourceTensor]]) -> None:
    """``SourceError`` naming both files if two entries share a tensor name."""
    seen: dict[str, str] = {}
    for name, entry in entries:
        if name in seen:
            raise SourceError(
                f"tensor {name!r} appears twice: in {seen[name]} and in {entry.file}"
            )
        seen[name] = entry.file
