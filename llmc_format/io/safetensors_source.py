"""Reading one ``.safetensors`` file, lazily and bit-exactly.

The ``safetensors`` library validates the header (bounds, overlaps, dtype codes) at open
(its numpy framework: we never ask it for a tensor, so its lack of bfloat16 does not
matter, and torch, ~0.5 GiB resident, is not imported). Only
the header is read at open; a tensor's bytes are read when its entry is called, with
``pread`` into an array the caller owns (at the offsets of the header safetensors has
validated), not through safetensors' memory map: pages of a memory map stay mapped once
touched, so packing a model through one counted the whole file in the process's
resident memory (2.5 GiB peak RSS for a 2.1 GiB model against 0.6 GiB allocated,
docs/results/speed.md); with ``pread`` the file's pages are only page cache.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError, safe_open

from llmc_format import dtypes
from llmc_format.dtypes import SAFETENSORS_NAMES
from llmc_format.errors import SourceError
from llmc_format.io.base import Source, SourceTensor, file_facts
from llmc_format.plaindata import loads_json


class SafetensorsFile(Source):
    """A single ``.safetensors`` file; tensors in the order of their data offsets."""

    def __init__(self, path: Path, display_name: str | None = None) -> None:
        super().__init__(path)
        #: how errors and ``describe`` name the file (a shard's path relative to its directory)
        self.display_name = display_name or path.name
        try:
            self._handle = safe_open(str(path), framework="numpy")
        except (SafetensorError, OSError, ValueError) as exc:
            raise SourceError(f"{self.display_name}: not a readable safetensors file: {exc}") from None
        self._metadata: dict[str, str] = dict(self._handle.metadata() or {})
        self._spans = self._data_spans()
        self._fd: int | None = os.open(path, os.O_RDONLY)
        self._entries = [(name, self._entry(name)) for name in self._ordered_names()]

    def _data_spans(self) -> dict[str, tuple[int, int]]:
        """Absolute (start, end) byte offsets of each tensor's data, from the header that
        ``safe_open`` has just validated (8-byte little-endian length, then JSON)."""
        try:
            with open(self.path, "rb") as f:
                (n,) = struct.unpack("<Q", f.read(8))
                header = loads_json(f.read(n))
        except (OSError, ValueError, struct.error) as exc:
            raise SourceError(f"{self.display_name}: cannot read the safetensors header: {exc}") from None
        base = 8 + n
        return {name: (base + int(info["data_offsets"][0]), base + int(info["data_offsets"][1]))
                for name, info in header.items() if name != "__metadata__"}

    def _ordered_names(self) -> list[str]:
        # offset_keys (safetensors >= 0.5) gives the file's order; older versions only sorted names
        offset_keys = getattr(self._handle, "offset_keys", None)
        return list(offset_keys() if offset_keys is not None else self._handle.keys())

    def _entry(self, name: str) -> SourceTensor:
        view = self._handle.get_slice(name)
        code = view.get_dtype()
        dtype = SAFETENSORS_NAMES.get(code)
        if dtype is None:
            raise SourceError(
                f"{self.display_name}: tensor {name!r} has safetensors dtype {code}, "
                f"which llmc cannot store"
            )
        shape = tuple(int(d) for d in view.get_shape())
        return SourceTensor(name, dtype, shape, lambda: self._load(name, dtype, shape),
                           file=self.display_name)

    def _load(self, name: str, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
        if self._fd is None:
            raise SourceError(f"{self.display_name}: source is closed (reading {name!r})")
        start, end = self._spans[name]
        out = np.empty(end - start, dtype=np.uint8)
        view, pos = memoryview(out), 0
        try:
            while pos < len(view):  # pread may return less than asked (signals, huge reads)
                got = os.preadv(self._fd, [view[pos:]], start + pos)
                if got == 0:
                    raise OSError(f"file ends at byte {start + pos}, inside the tensor's data")
                pos += got
        except OSError as exc:
            raise SourceError(f"{self.display_name}: cannot read tensor {name!r} "
                              f"(bytes {start}..{end}): {exc}") from None
        return out.view(dtypes.to_numpy(dtype)).reshape(shape)

    def tensors(self) -> Iterator[tuple[str, SourceTensor]]:
        return iter(list(self._entries))

    @property
    def metadata(self) -> dict[str, str]:
        """The file's free-form ``__metadata__`` strings."""
        return dict(self._metadata)

    def describe(self) -> dict[str, Any]:
        facts = file_facts(self.path)
        facts["name"] = self.display_name
        out: dict[str, Any] = {"format": "safetensors", "files": [facts]}
        if self._metadata:
            out["metadata"] = dict(self._metadata)
        return out

    def close(self) -> None:
        self._handle = None  # safetensors' memory map goes with the last reference
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
