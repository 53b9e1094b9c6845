"""A source over tensors already in memory (what ``save_file`` packs)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from llmc_format.dtypes import name_of
from llmc_format.errors import SourceError
from llmc_format.io.base import Source, SourceTensor


def _as_numpy(name: str, value: Any) -> np.ndarray:
    if isinstance(value, np.ndarray):
        return np.asarray(order="C", a=value)
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        torch = None
    if torch is not None and isinstance(value, torch.Tensor):
        from llmc_format.io.torchconv import from_torch

        return np.asarray(order="C", a=from_torch(value.detach().cpu()))
    raise SourceError(f"tensor {name!r}: expected a numpy array or torch tensor, "
                      f"got {type(value).__name__}")


class MemorySource(Source):
    """``{name: array}`` as a Source; arrays are converted (bf16-aware) once, up front."""

    def __init__(self, tensors: Mapping[str, Any]) -> None:
        super().__init__(Path("<memory>"))
        self._arrays: dict[str, np.ndarray] = {}
        for name, value in tensors.items():
            if not isinstance(name, str) or not name:
                raise SourceError(f"tensor names must be non-empty strings, got {name!r}")
            self._arrays[name] = _as_numpy(name, value)

    def tensors(self) -> Iterator[tuple[str, SourceTensor]]:
        for name, arr in self._arrays.items():
            yield name, SourceTensor(name, name_of(arr.dtype), tuple(arr.shape),
                                    lambda a=arr: a, "<memory>")

    def describe(self) -> dict[str, Any]:
        return {"format": "memory", "tensors": len(self._arrays)}
