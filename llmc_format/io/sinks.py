"""Writing tensors and attachments out as a Hugging Face directory.

``write_safetensors`` takes a stream of ``(name, array)`` and writes what
``save_pretrained`` would: ``model.safetensors``, or shards
``model-00001-of-0000N.safetensors`` plus ``model.safetensors.index.json``. At most one
shard is held in memory; the shard count is known only at the end, so shards are written
under temporary names and renamed once everything succeeded (a crash leaves no
half-written file under a final name).

``write_attachments`` writes config/tokenizer files, refusing any path that would land
outside the output directory: archives come from strangers.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePosixPath

import numpy as np
from safetensors.torch import save_file

from llmc_format import dtypes
from llmc_format.errors import SourceError
from llmc_format.io.torchconv import contiguous, to_torch_shared

SINGLE_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"
_SHARD_RE = re.compile(r"model-\d{5}-of-\d{5}\.safetensors")


def shard_name(i: int, n: int) -> str:
    """Hugging Face's shard file name (1-based ``i`` of ``n``)."""
    return f"model-{i:05d}-of-{n:05d}.safetensors"


def _prepare(name: object, array: object) -> np.ndarray:
    """A C-contiguous little-endian array of a storable dtype, or ``SourceError``."""
    if not isinstance(name, str) or not name:
        raise SourceError(f"tensor name {name!r} is not a non-empty string")
    if not isinstance(array, np.ndarray):
        raise SourceError(f"tensor {name!r}: expected a numpy array, got {type(array).__name__}")
    try:
        dtypes.name_of(array.dtype)
    except Exception:
        raise SourceError(f"tensor {name!r}: dtype {array.dtype} cannot be stored") from None
    arr = contiguous(array)
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    return arr


class _ShardWriter:
    """Accumulates one shard at a time and writes it under a temporary name."""

    def __init__(self, out_dir: Path, shard_size: int | None, metadata: dict[str, str]) -> None:
        self.out_dir = out_dir
        self.shard_size = shard_size
        self.metadata = metadata
        self.tag = uuid.uuid4().hex[:12]
        self.temp_files: list[Path] = []
        self.shard_of: dict[str, int] = {}
        self.total_size = 0
        self._current: dict[str, np.ndarray] = {}
        self._current_bytes = 0
        self._pointers: set[int] = set()

    def add(self, name: str, arr: np.ndarray) -> None:
        if name in self.shard_of or name in self._current:
            raise SourceError(f"tensor {name!r} is written twice")
        limit = self.shard_size
        if limit is not None and self._current and self._current_bytes + arr.nbytes > limit:
            self.flush()
        pointer = arr.__array_interface__["data"][0]
        if arr.nbytes and pointer in self._pointers:  # safetensors refuses shared memory
            arr = arr.copy()
        self._pointers.add(pointer)
        self._current[name] = arr
        self._current_bytes += arr.nbytes
        self.total_size += arr.nbytes

    def flush(self) -> None:
        index = len(self.temp_files)
        tmp = self.out_dir / f".{self.tag}-{index:05d}.safetensors.tmp"
        self.temp_files.append(tmp)
        tensors = {name: to_torch_shared(arr) for name, arr in self._current.items()}
        save_file(tensors, str(tmp), metadata=self.metadata)
        _fsync(tmp)
        for name in self._current:
            self.shard_of[name] = index
        self._current, self._current_bytes, self._pointers = {}, 0, set()

    def finish(self) -> list[str]:
        """Write the last shard, then give every shard its final name; the names written."""
        if self._current or not self.temp_files:
            self.flush()
        n = len(self.temp_files)
        finals = [SINGLE_NAME] if n == 1 else [shard_name(i + 1, n) for i in range(n)]
        for tmp, final in zip(self.temp_files, finals, strict=True):
            os.replace(tmp, self.out_dir / final)
        self.temp_files = []
        written = list(finals)
        if n > 1:
            index = {
                "metadata": {"total_size": self.total_size},
                "weight_map": {k: finals[v] for k, v in sorted(self.shard_of.items())},
            }
            _atomic_write(self.out_dir / INDEX_NAME, (json.dumps(index, indent=2) + "\n").encode())
            written.append(INDEX_NAME)
        _remove_stale(self.out_dir, set(written))
        return written

    def abort(self) -> None:
        for tmp in self.temp_files:
            tmp.unlink(missing_ok=True)
        self.temp_files = []


def write_safetensors(
    tensors: Iterable[tuple[str, np.ndarray]],
    out_dir: str | os.PathLike[str],
    shard_size: int | None = None,
    metadata: Mapping[str, str] | None = None,
) -> list[str]:
    """Write tensors as a Hugging Face safetensors checkpoint; return the file names written.

    ``shard_size`` is the most bytes of tensor data per shard (a larger tensor gets a shard
    of its own), as ``save_pretrained(max_shard_size=...)``; ``None`` writes one file.
    ``metadata`` is the safetensors ``__metadata__`` (strings); ``{"format": "pt"}`` is
    added because transformers expects it. Older weight files of ours in ``out_dir``
    (``model.safetensors``, shards, index) are removed so loaders cannot pick a stale one.
    """
    if shard_size is not None and (not isinstance(shard_size, int) or shard_size <= 0):
        raise SourceError(f"shard_size must be a positive int, got {shard_size!r}")
    meta = {"format": "pt", **dict(metadata or {})}
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise SourceError("safetensors metadata must map strings to strings")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    writer = _ShardWriter(out, shard_size, meta)
    try:
        for name, array in tensors:
            writer.add(name, _prepare(name, array))
        return writer.finish()
    except BaseException:
        writer.abort()
        raise


def _remove_stale(out_dir: Path, keep: set[str]) -> None:
    for path in out_dir.iterdir():
        name = path.name
        ours = name in (SINGLE_NAME, INDEX_NAME) or _SHARD_RE.fullmatch(name)
        if ours and name not in keep and (path.is_file() or path.is_symlink()):
            path.unlink()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def check_relative_path(rel: object) -> PurePosixPath:
    """A safe relative posix path, or ``SourceError``: no absolute, ``..``, ``.``, empty parts."""
    if not isinstance(rel, str) or not rel:
        raise SourceError(f"attachment path {rel!r} is not a non-empty string")
    if "\\" in rel or "\x00" in rel or ":" in rel:
        raise SourceError(f"attachment path {rel!r} contains a forbidden character")
    if rel.startswith("/"):
        raise SourceError(f"attachment path {rel!r} is absolute")
    parts = rel.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise SourceError(f"attachment path {rel!r} has an empty, '.' or '..' component")
    return PurePosixPath(rel)


def write_attachments(
    items: Iterable[tuple[str, bytes]], out_dir: str | os.PathLike[str]
) -> list[str]:
    """Write ``(relative posix path, bytes)`` files under ``out_dir``; return the paths written.

    All paths are checked before anything is written. A path is refused (``SourceError``)
    if it is absolute, climbs with ``..``, or would resolve outside ``out_dir`` through a
    symlink already there (a directory link, or a link at the file's own place).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    root = out.resolve()
    checked: list[tuple[PurePosixPath, bytes]] = []
    seen: set[str] = set()
    for rel, data in items:
        path = check_relative_path(rel)
        if not isinstance(data, bytes | bytearray | memoryview):
            raise SourceError(f"attachment {rel!r}: content is {type(data).__name__}, not bytes")
        if str(path) in seen:
            raise SourceError(f"attachment {rel!r} appears twice")
        seen.add(str(path))
        _check_inside(root, out, path)
        checked.append((path, bytes(data)))
    written = []
    for path, data in checked:
        target = out.joinpath(*path.parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        _check_inside(root, out, path)  # a directory created meanwhile cannot redirect it
        _atomic_write(target, data)
        written.append(str(path))
    return written


def _check_inside(root: Path, out: Path, path: PurePosixPath) -> None:
    target = out.joinpath(*path.parts)
    if target.is_symlink():
        raise SourceError(f"attachment {str(path)!r}: a symlink is already at that place")
    resolved = target.resolve()
    if not resolved.is_relative_to(root) or resolved == root:
        raise SourceError(f"attachment {str(path)!r} resolves outside the output directory")
