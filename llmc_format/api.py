"""The Python surface, modelled on ``safetensors``: ``safe_open``, ``load_file``, ``save_file``.

    with llmc_format.safe_open("model.llmc", framework="pt") as f:
        for name in f.keys():
            w = f.get_tensor(name)
        rows = f.get_slice("model.layers.0.mlp.up_proj.weight")[0:128]

Reading a tensor reads and checks only its own blobs; ``get_slice(name)[a:b]`` reads only
the blobs (chunks, frames) covering rows a..b.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from llmc_format.codecs.base import ArraySpec
from llmc_format.container.reader import Reader
from llmc_format.decode import read_tensor
from llmc_format.errors import LlmcError

_FRAMEWORKS = ("np", "numpy", "pt", "torch")


def _convert(array: np.ndarray, framework: str, device: str) -> Any:
    if framework in ("np", "numpy"):
        return array
    from llmc_format.io.torchconv import to_torch

    t = to_torch(np.asarray(order="C", a=array))
    return t if device == "cpu" else t.to(device)


class TensorSlice:
    """Lazy view of one tensor; indexing the first axis decodes only those rows."""

    def __init__(self, f: LlmcFile, name: str) -> None:
        self._f = f
        self._name = name
        entry = f._reader.tensor(name)
        self._spec = ArraySpec(entry.dtype, entry.shape, name)

    def get_shape(self) -> list[int]:
        return list(self._spec.shape)

    def get_dtype(self) -> str:
        return self._spec.dtype

    def __len__(self) -> int:
        return self._spec.shape[0] if self._spec.shape else 0

    def __getitem__(self, index: Any) -> Any:
        if index is Ellipsis or index == () or (isinstance(index, tuple) and index[0] is Ellipsis):
            # ``[...]`` is how transformers materializes a safetensors slice: the whole tensor
            whole = read_tensor(self._f._reader, self._name)
            return _convert(np.asarray(order="C", a=whole[index]), self._f.framework, self._f.device)
        if not self._spec.shape:
            raise LlmcError(f"tensor {self._name!r} is 0-d: use get_tensor")
        first, rest = (index[0], index[1:]) if isinstance(index, tuple) else (index, ())
        n = self._spec.shape[0]
        if isinstance(first, (int, np.integer)):
            i = int(first) + n if first < 0 else int(first)
            if not 0 <= i < n:
                raise IndexError(f"row {first} out of range for tensor {self._name!r} ({n} rows)")
            rows, local = (i, i + 1), (0, *rest)
        elif isinstance(first, slice):
            start, stop, step = first.indices(n)
            if step < 0:  # decode the covering range, then let numpy reverse it
                lo, hi = (stop + 1, start + 1) if stop < start else (0, 0)
            else:
                lo, hi = (start, max(start, stop))
            rows = (lo, hi)
            local = (slice(start - lo, stop - lo if stop - lo >= 0 else None, step), *rest)
        else:
            raise TypeError("get_slice supports an int or a slice on the first axis")
        block = read_tensor(self._f._reader, self._name, rows)
        return _convert(np.asarray(order="C", a=block[local]), self._f.framework, self._f.device)


class LlmcFile:
    """An open archive (see ``safe_open``)."""

    def __init__(self, path: str | os.PathLike[str], framework: str = "np", device: str = "cpu",
                 *, verify_checksums: bool = True) -> None:
        if framework not in _FRAMEWORKS:
            raise LlmcError(f"framework must be one of {', '.join(_FRAMEWORKS)}, not {framework!r}")
        self.framework, self.device = framework, device
        self._reader = Reader(path, verify_checksums=verify_checksums)

    def keys(self) -> list[str]:
        return self._reader.keys()

    def metadata(self) -> dict[str, Any]:
        """The file metadata map (tool, source, user metadata, RD summary...)."""
        return self._reader.metadata

    def get_tensor(self, name: str) -> Any:
        return _convert(read_tensor(self._reader, name), self.framework, self.device)

    def get_slice(self, name: str) -> TensorSlice:
        return TensorSlice(self, name)

    def info(self, name: str) -> dict[str, Any]:
        """The index entry of ``name`` as plain data (pipeline, blobs, quant and RD records)."""
        return self._reader.tensor(name).to_dict()

    def attachments(self) -> list[str]:
        return self._reader.attachment_names()

    def read_attachment(self, name: str) -> bytes:
        return self._reader.read_attachment(name)

    def close(self) -> None:
        self._reader.close()

    def __enter__(self) -> LlmcFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())


def safe_open(path: str | os.PathLike[str], framework: str = "np", device: str = "cpu",
              *, verify_checksums: bool = True) -> LlmcFile:
    """Open an archive for random access; ``framework`` is "np" or "pt"."""
    return LlmcFile(path, framework, device, verify_checksums=verify_checksums)


def load_file(path: str | os.PathLike[str], framework: str = "np", device: str = "cpu") -> dict[str, Any]:
    """Every tensor of the archive, decoded, in archive order; an alias is the same object
    as its target (decoded once, like tied weights)."""
    with safe_open(path, framework, device) as f:
        decoded: dict[str, Any] = {}  # stored name -> tensor: aliases share it, decoded once
        out: dict[str, Any] = {}
        for k in f.keys():
            target = f._reader.resolve(k).name
            if target not in decoded:
                decoded[target] = f.get_tensor(target)
            out[k] = decoded[target]
        return out


def save_file(
    tensors: Mapping[str, Any],
    path: str | os.PathLike[str],
    metadata: dict[str, Any] | None = None,
    *,
    codec: str = "exact",
    qp: int | None = None,
    jobs: int | None = None,
    **options: Any,
) -> Path:
    """Write ``tensors`` (numpy arrays or torch tensors) to ``path``.

    ``codec="exact"`` is lossless; a video codec id ("vvc", "hevc", "av1", "ffv1") stores
    large float matrices lossy at ``qp`` by the default policy. ``options`` are those of
    ``llmc_format.pack`` (= ``llmc pack``): a target ``bpw=``, ``size=`` or ``snr=``
    instead of a QP, ``lossy=``/``lossless=`` globs, ``preset``, ``bits``,
    ``min_lossy_numel``, ``created``, ``progress``...
    """
    from llmc_format.io.memory import MemorySource

    return pack_from(MemorySource(tensors), path, codec=codec, qp=qp, jobs=jobs,
                     metadata=metadata, **options)


def pack_from(
    source: Any,
    dst: str | os.PathLike[str],
    *,
    progress: Any = None,
    **options: Any,
) -> Path:
    """Pack an open ``Source`` as ``llmc pack`` does: same options by the same names, same
    defaults, same bytes (both build one ``pipeline.options.PackOptions``; its fields are
    the options and their defaults).

    One of ``bpw`` (all-in bits per lossy weight), ``size`` (whole file, bytes or "60MB")
    or ``snr`` (dB, every lossy tensor) makes the QPs per tensor be chosen by RD
    optimization, weighted as ``weighting`` says (default ``auto``, as the command);
    ``calibration`` is a text file (or "self") weighting it. Options that have no effect
    are reported as ``UserWarning``; invalid ones raise ``UsageError`` before any work.
    """
    import warnings

    from llmc_format.pipeline.options import check_paths, from_api, run_pack

    opts = from_api(**options)
    check_paths(None, dst, force=True)
    for w in opts.warnings():
        warnings.warn(w, UserWarning, stacklevel=2)
    run_pack(opts, source, dst, progress=progress,
             warn=lambda w: warnings.warn(w, UserWarning, stacklevel=3))
    return Path(dst)
