"""Element types llmc stores, by their stable names in the format.

The names are the ones written in the index (``spec/FORMAT.md`` §5.4). In memory,
tensors are numpy arrays; bfloat16 and float8 use the ``ml_dtypes`` numpy types so that
bit-exact handling needs no special cases (a bf16 array views as uint16 and back).

``ml_dtypes`` is imported on first use of one of its types: its import costs about a
second of CPU (measured 1.2–1.5 s here), which a float32 or float16 model never needs.
"""

from __future__ import annotations

import sys

import numpy as np

from llmc_format.errors import FormatError

#: format name -> numpy dtype (little-endian). Order is irrelevant; names are forever.
_DTYPES: dict[str, np.dtype] = {
    "bool": np.dtype(np.bool_),
    "uint8": np.dtype("<u1"),
    "int8": np.dtype("<i1"),
    "uint16": np.dtype("<u2"),
    "int16": np.dtype("<i2"),
    "uint32": np.dtype("<u4"),
    "int32": np.dtype("<i4"),
    "uint64": np.dtype("<u8"),
    "int64": np.dtype("<i8"),
    "float16": np.dtype("<f2"),
    "float32": np.dtype("<f4"),
    "float64": np.dtype("<f8"),
}
_NAMES: dict[np.dtype, str] = {v: k for k, v in _DTYPES.items()}
#: format names of the ``ml_dtypes`` types (attribute names in ``ml_dtypes``)
_ML_DTYPES = {"bfloat16": "bfloat16", "float8_e4m3fn": "float8_e4m3fn",
              "float8_e5m2": "float8_e5m2"}

#: Names whose values are floating point (lossy codecs accept only these).
FLOAT_DTYPES = frozenset(
    {"float16", "bfloat16", "float32", "float64", "float8_e4m3fn", "float8_e5m2"}
)

#: safetensors' dtype codes <-> ours, for reading and writing .safetensors files.
SAFETENSORS_NAMES: dict[str, str] = {
    "BOOL": "bool", "U8": "uint8", "I8": "int8", "U16": "uint16", "I16": "int16",
    "U32": "uint32", "I32": "int32", "U64": "uint64", "I64": "int64", "F16": "float16",
    "BF16": "bfloat16", "F32": "float32", "F64": "float64", "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
}


def _load_ml_dtypes() -> None:
    """Add the ``ml_dtypes`` types to the tables (once)."""
    if "bfloat16" in _DTYPES:
        return
    import ml_dtypes

    for name, attr in _ML_DTYPES.items():
        dt = np.dtype(getattr(ml_dtypes, attr))
        _DTYPES[name] = dt
        _NAMES[dt] = name


def to_numpy(name: str) -> np.dtype:
    """The numpy dtype of a format dtype name; ``FormatError`` if the name is unknown."""
    try:
        return _DTYPES[name]
    except (KeyError, TypeError):
        if isinstance(name, str) and name in _ML_DTYPES:
            _load_ml_dtypes()
            return _DTYPES[name]
        raise FormatError(f"unknown dtype {name!r}") from None


def name_of(dtype: np.dtype) -> str:
    """The format name of a numpy dtype; ``FormatError`` for types llmc cannot store."""
    dt = np.dtype(dtype)
    if dt.byteorder == ">":
        dt = dt.newbyteorder("<")
    try:
        return _NAMES[dt]
    except KeyError:
        pass
    if "ml_dtypes" in sys.modules:  # an array of its types exists only once it is imported
        _load_ml_dtypes()
        if dt in _NAMES:
            return _NAMES[dt]
    raise FormatError(f"dtype {dt} cannot be stored in an llmc file")


def itemsize(name: str) -> int:
    return to_numpy(name).itemsize


def all_names() -> list[str]:
    return sorted({*_DTYPES, *_ML_DTYPES})
