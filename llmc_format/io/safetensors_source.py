"""Reading one ``.safetensors`` file, lazily and bit-exactly.

The ``safetensors`` library validates the header (bounds, overlaps, dtype codes) and
memory-maps the file; we open it with the torch framework because its numpy framework
has no bfloat16, then reinterpret the bits through ``torchconv.from_torch``. Only the
header is read at open; a tensor's bytes are read when its entry is called.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError, safe_open

from llmc_format.dtypes import SAFETENSORS_NAMES
from llmc_format.errors import SourceError
from llmc_format.io.base import Source, TensorEntry, file_facts
from llmc_format.io.torchconv import from_torch


class SafetensorsFile(Source):
    """A single ``.safetensors`` file; tensors in the order of their data offsets."""

    def __init__(self, path: Path, display_name: str | None = None) -> None:
        super().__init__(path)
        #: how errors and ``describe`` name the file (a shard's path relative to its directory)
        self.display_name = display_name or path.name
        try:
            self._handle = safe_open(str(path), framework="pt")
        except (SafetensorError, OSError, ValueError) as exc:
            raise SourceError(f"{self.display_name}: not a readable safetensors file: {exc}") from None
        self._metadata: dict[str, str] = dict(self._handle.metadata() or {})
        self._entries = [(name, self._entry(name)) for name in self._ordered_names()]

    def _ordered_names(self) -> list[str]:
        # offset_keys (safetensors >= 0.5) gives the file's order; older versions only sorted names
        offset_keys = getattr(self._handle, "offset_keys", None)
        return list(offset_keys() if offset_keys is not None else self._handle.keys())

    def _entry(self, name: str) -> TensorEntry:
        view = self._handle.get_slice(name)
        code = view.get_dtype()
        dtype = SAFETENSORS_NAMES.get(code)
        if dtype is None:
            raise SourceError(
                f"{self.display_name}: tensor {name!r} has safetensors dtype {code}, "
                f"which llmc cannot store"
            )
        shape = tuple(int(d) for d in view.get_shape())
        return TensorEntry(name, dtype, shape, lambda: self._load(name), file=self.display_name)

    def _load(self, name: str) -> np.ndarray:
        if self._handle is None:
            raise SourceError(f"{self.display_name}: source is closed (reading {name!r})")
        try:
            tensor = self._handle.get_tensor(name)
        except (SafetensorError, OSError, RuntimeError, ValueError) as exc:
            raise SourceError(f"{self.display_name}: cannot read tensor {name!r}: {exc}") from None
        return from_torch(tensor)

    def tensors(self) -> Iterator[tuple[str, TensorEntry]]:
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
        self._handle = None  # the memory map goes with the last reference
