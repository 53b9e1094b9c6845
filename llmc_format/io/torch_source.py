"""Reading a torch state-dict file (``.pt``, ``.pth``, ``.bin``) without running its code.

A torch checkpoint is a pickle, and unpickling runs whatever the file says. We only ever
call ``torch.load(..., weights_only=True)``, whose restricted unpickler accepts tensors and
plain containers and refuses everything else; a refusal becomes a ``SourceError``.

Zip-format checkpoints (everything ``torch.save`` wrote since torch 1.6) are memory-mapped
(``mmap=True``), so opening reads only the pickle and a tensor's bytes are paged in when
its entry is called. Legacy (pre-zip) checkpoints cannot be mapped and are read whole at
open; they are small in practice.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from llmc_format.errors import SourceError
from llmc_format.io.base import Source, SourceTensor, file_facts
from llmc_format.io.torchconv import dtype_name_of_torch, from_torch


def load_state_dict(path: Path, display_name: str) -> dict[str, torch.Tensor]:
    """``torch.load`` with ``weights_only=True``; a dict of str -> tensor or ``SourceError``."""
    mmap = zipfile.is_zipfile(path)
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as exc:  # torch raises many types; all mean "cannot read this safely"
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SourceError(
            f"{display_name}: cannot be read as a torch state dict with weights_only=True "
            f"({type(exc).__name__}: {first_line[:300]})"
        ) from None
    if not isinstance(obj, Mapping):
        raise SourceError(f"{display_name}: holds a {type(obj).__name__}, not a state dict")
    out: dict[str, torch.Tensor] = {}
    for key, value in obj.items():
        if not isinstance(key, str):
            raise SourceError(f"{display_name}: state dict key {key!r} is not a string")
        if not isinstance(value, torch.Tensor):
            raise SourceError(
                f"{display_name}: entry {key!r} is a {type(value).__name__}, not a tensor"
            )
        out[key] = value
    return out


def _identity(t: torch.Tensor) -> tuple[Any, ...]:
    """Two tensors with equal identities are the same bytes viewed the same way."""
    return (
        t.untyped_storage().data_ptr(),
        t.storage_offset(),
        tuple(t.shape),
        tuple(t.stride()),
        t.dtype,
    )


class TorchFile(Source):
    """A torch state dict; tensors in the dict's (the file's) order, tied ones reported once."""

    def __init__(self, path: Path, display_name: str | None = None) -> None:
        super().__init__(path)
        self.display_name = display_name or path.name
        self._state: dict[str, torch.Tensor] | None = load_state_dict(path, self.display_name)
        self._aliases: dict[str, str] = {}
        self._entries: list[tuple[str, SourceTensor]] = []
        first_of: dict[tuple[Any, ...], str] = {}
        for name, tensor in self._state.items():
            ident = _identity(tensor)
            if tensor.numel() > 0 and ident in first_of:
                self._aliases[name] = first_of[ident]
                continue
            first_of.setdefault(ident, name)
            dtype = dtype_name_of_torch(tensor.dtype, f"{self.display_name}: tensor {name!r}")
            entry = SourceTensor(
                name, dtype, tuple(tensor.shape), lambda n=name: self._load(n), file=self.display_name
            )
            self._entries.append((name, entry))

    def _load(self, name: str) -> np.ndarray:
        if self._state is None:
            raise SourceError(f"{self.display_name}: source is closed (reading {name!r})")
        # from_torch copies a non-contiguous view; a contiguous one shares the mapped pages,
        # so copy to hand the caller memory that does not depend on the file staying put.
        return np.array(from_torch(self._state[name]), copy=True)

    def tensors(self) -> Iterator[tuple[str, SourceTensor]]:
        return iter(list(self._entries))

    def aliases(self) -> dict[str, str]:
        return dict(self._aliases)

    def describe(self) -> dict[str, Any]:
        facts = file_facts(self.path)
        facts["name"] = self.display_name
        return {"format": "torch", "files": [facts]}

    def close(self) -> None:
        self._state = None
