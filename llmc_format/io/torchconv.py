"""numpy <-> torch conversion, bfloat16 and float8 aware, in one place.

numpy has no bfloat16 or float8 of its own; llmc uses the ``ml_dtypes`` types, which torch
does not know. Both sides agree on the bits, so conversion is a reinterpretation through a
same-width integer type: no rounding, no copy when the memory is already contiguous.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from llmc_format import dtypes
from llmc_format.errors import SourceError

#: format dtype name -> torch dtype.
_TORCH: dict[str, torch.dtype] = {
    "bool": torch.bool,
    "uint8": torch.uint8,
    "int8": torch.int8,
    "uint16": torch.uint16,
    "int16": torch.int16,
    "uint32": torch.uint32,
    "int32": torch.int32,
    "uint64": torch.uint64,
    "int64": torch.int64,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float32": torch.float32,
    "float64": torch.float64,
    "float8_e4m3fn": torch.float8_e4m3fn,
    "float8_e5m2": torch.float8_e5m2,
}
_FROM_TORCH: dict[torch.dtype, str] = {v: k for k, v in _TORCH.items()}

#: types numpy cannot hold natively -> (integer type of the same width in torch, in numpy).
_VIA_INT: dict[str, tuple[torch.dtype, np.dtype]] = {
    "bfloat16": (torch.int16, np.dtype("<i2")),
    "float8_e4m3fn": (torch.uint8, np.dtype("<u1")),
    "float8_e5m2": (torch.uint8, np.dtype("<u1")),
}


def contiguous(array: np.ndarray) -> np.ndarray:
    """C-contiguous ``array`` (itself if already so); unlike ``np.ascontiguousarray``, a
    0-d array stays 0-d."""
    return array if array.flags.c_contiguous else np.ascontiguousarray(array)


def dtype_name_of_torch(dtype: torch.dtype, where: str = "") -> str:
    """The format dtype name of a torch dtype; ``SourceError`` (naming ``where``) if llmc cannot store it."""
    try:
        return _FROM_TORCH[dtype]
    except KeyError:
        suffix = f" ({where})" if where else ""
        raise SourceError(f"torch dtype {dtype} cannot be stored in an llmc file{suffix}") from None


def torch_dtype_of(name: str) -> torch.dtype:
    """The torch dtype of a format dtype name."""
    dtypes.to_numpy(name)  # FormatError for unknown names, consistently with the rest of llmc
    return _TORCH[name]


def to_torch(array: np.ndarray) -> torch.Tensor:
    """A CPU tensor with the same dtype and bits as ``array``.

    Shares memory with ``array`` when it is contiguous, little-endian and writable; a
    read-only array (e.g. a memory map) is copied so that writing to the tensor can never
    reach a file. Big-endian input is byte-swapped to native order.
    """
    name = _name_of_array(array)
    arr = contiguous(array)
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    if not arr.flags.writeable:
        arr = arr.copy()
    return _share(arr, name)


def _share(arr: np.ndarray, name: str) -> torch.Tensor:
    """``torch.from_numpy`` through a same-width integer for types torch's numpy bridge lacks."""
    if name in _VIA_INT:
        _, int_np = _VIA_INT[name]
        return torch.from_numpy(arr.view(int_np)).view(_TORCH[name])
    return torch.from_numpy(arr)


def to_torch_shared(array: np.ndarray) -> torch.Tensor:
    """Like ``to_torch`` but never copies a contiguous read-only array.

    For callers that only read the tensor (e.g. serialization): torch warns when it wraps
    non-writable memory, and the warning is silenced here because nothing will write.
    """
    name = _name_of_array(array)
    arr = contiguous(array)
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*not writ.*", category=UserWarning)
        return _share(arr, name)


def from_torch(tensor: torch.Tensor) -> np.ndarray:
    """A C-contiguous numpy array with the same dtype and bits as ``tensor`` (moved to CPU).

    bfloat16 and float8 come back as ``ml_dtypes`` arrays. Shares memory with a contiguous
    CPU tensor; otherwise the data is copied once.
    """
    name = dtype_name_of_torch(tensor.dtype)
    t = tensor.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    t = t.contiguous()
    if name in _VIA_INT:
        int_torch, _ = _VIA_INT[name]
        return t.view(int_torch).numpy().view(dtypes.to_numpy(name))
    return t.numpy()


def _name_of_array(array: np.ndarray) -> str:
    if not isinstance(array, np.ndarray):
        raise SourceError(f"expected a numpy array, got {type(array).__name__}")
    try:
        return dtypes.name_of(array.dtype)
    except Exception:
        raise SourceError(f"numpy dtype {array.dtype} cannot be stored in an llmc file") from None


__all__ = [
    "contiguous",
    "dtype_name_of_torch",
    "from_torch",
    "to_torch",
    "to_torch_shared",
    "torch_dtype_of",
]
