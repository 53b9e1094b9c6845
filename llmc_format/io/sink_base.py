"""What every output format's writer shares (``io/sinks.py`` lists the formats).

Tensors arrive as ``(name, array)`` pairs; ``prepare`` checks one and makes it
C-contiguous little-endian. Tied weights are ``aliases`` (alias -> target), checked by
``check_aliases``. Files are written under temporary names and published (renamed into
place, with the user's usual file mode) only once complete; ``Writeback`` keeps the
final ``fsync`` short. ``write_sharded`` is the checkpoint writer that holds one shard at
a time (safetensors' non-streamed writer and torch's): shard files named by a
``CheckpointLayout``, an index when there are several.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from llmc_format import dtypes
from llmc_format.errors import SourceError
from llmc_format.io.sinks import remove_stale
from llmc_format.outfiles import atomic_output, umask

if TYPE_CHECKING:  # torch is imported only by the writers that need it (~3 s of start-up)
    import torch


@dataclass(frozen=True)
class CheckpointLayout:
    """File names of one sharded checkpoint format, as transformers looks them up (the
    format's ``SinkFormat.files`` recognises them)."""

    single: str
    index: str
    shard_format: str

    def shard(self, i: int, n: int) -> str:
        """The name of shard ``i`` (1-based) of ``n``."""
        return self.shard_format.format(i=i, n=n)


def prepare(name: object, array: object) -> np.ndarray:
    """A C-contiguous little-endian array of a storable dtype, or ``SourceError``."""
    if not isinstance(name, str) or not name:
        raise SourceError(f"tensor name {name!r} is not a non-empty string")
    if not isinstance(array, np.ndarray):
        raise SourceError(f"tensor {name!r}: expected a numpy array, got {type(array).__name__}")
    try:
        dtypes.name_of(array.dtype)
    except Exception:
        raise SourceError(f"tensor {name!r}: dtype {array.dtype} cannot be stored") from None
    arr = array if array.flags.c_contiguous else np.ascontiguousarray(array)  # 0-d stays 0-d
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    return arr


def check_aliases(aliases: Mapping[str, str] | None) -> dict[str, list[str]]:
    """target -> its aliases; ``SourceError`` for an alias of an alias or of itself."""
    by_target: dict[str, list[str]] = {}
    for alias, target in (aliases or {}).items():
        if not isinstance(alias, str) or not isinstance(target, str) or not alias or alias == target:
            raise SourceError(f"alias {alias!r} -> {target!r} is not a pair of distinct names")
        if target in (aliases or {}):
            raise SourceError(f"alias {alias!r} points at {target!r}, itself an alias")
        by_target.setdefault(target, []).append(alias)
    return by_target


def missing_targets(by_target: dict[str, list[str]], seen: set[str]) -> None:
    lost = {a: t for t, names in by_target.items() if t not in seen for a in names}
    if lost:
        alias, target = next(iter(lost.items()))
        raise SourceError(f"alias {alias!r} points at {target!r}, which was never written"
                          f"{f' (and {len(lost) - 1} more)' if len(lost) > 1 else ''}")


SaveShard = Callable[[dict[str, "torch.Tensor"], Path], None]


class ShardWriter:
    """Accumulates one shard at a time and writes it under a temporary name."""

    def __init__(self, out_dir: Path, layout: CheckpointLayout, shard_size: int | None,
                 save: SaveShard, share_aliases: bool) -> None:
        self.out_dir = out_dir
        self.layout = layout
        self.shard_size = shard_size
        self.save = save
        self.share_aliases = share_aliases
        self.tag = uuid.uuid4().hex[:12]
        self.temp_files: list[Path] = []
        self.shard_of: dict[str, int] = {}
        self.total_size = 0
        self.total_parameters = 0
        self._current: dict[str, np.ndarray] = {}
        self._shared: dict[str, str] = {}  # alias -> target, in the current shard
        self._current_bytes = 0
        self._pointers: set[int] = set()

    def _taken(self, name: str) -> bool:
        return name in self.shard_of or name in self._current or name in self._shared

    def add(self, name: str, arr: np.ndarray, aliases: Sequence[str] = ()) -> None:
        """Add a tensor and, right after it in the same shard, its aliases."""
        for n in (name, *aliases):
            if self._taken(n):
                raise SourceError(f"tensor {n!r} is written twice")
        copies = 0 if self.share_aliases else len(aliases)
        group_bytes = arr.nbytes * (1 + copies)
        limit = self.shard_size
        if limit is not None and self._current and self._current_bytes + group_bytes > limit:
            self.flush()
        pointer = arr.__array_interface__["data"][0]
        if arr.nbytes and pointer in self._pointers:  # safetensors refuses shared memory
            arr = arr.copy()
        self._pointers.add(pointer)
        self._current[name] = arr
        for alias in aliases:
            if self.share_aliases:
                self._shared[alias] = name
            else:
                self._current[alias] = arr.copy()
        self._current_bytes += group_bytes
        self.total_size += group_bytes
        self.total_parameters += arr.size * (1 + copies)

    def flush(self) -> None:
        index = len(self.temp_files)
        tmp = self.out_dir / f".{self.tag}-{index:05d}.{self.layout.single}.tmp"
        self.temp_files.append(tmp)
        from llmc_format.io.torchconv import to_torch_shared

        tensors = {name: to_torch_shared(arr) for name, arr in self._current.items()}
        for alias, target in self._shared.items():
            tensors[alias] = tensors[target]
        self.save(tensors, tmp)
        fsync_file(tmp)
        for name in tensors:
            self.shard_of[name] = index
        self._current, self._shared, self._current_bytes, self._pointers = {}, {}, 0, set()

    def finish(self) -> list[str]:
        """Write the last shard, then give every shard its final name; the names written."""
        if self._current or not self.temp_files:
            self.flush()
        temps, self.temp_files = self.temp_files, []
        return publish_shards(self.out_dir, self.layout, temps, self.shard_of,
                              self.total_size, self.total_parameters)

    def abort(self) -> None:
        for tmp in self.temp_files:
            tmp.unlink(missing_ok=True)
        self.temp_files = []


def publish_shards(out_dir: Path, layout: CheckpointLayout, temps: list[Path],
                   shard_of: Mapping[str, int], total_size: int, total_parameters: int
                   ) -> list[str]:
    """Give finished shard files (``temps``, in order) their final names, write the index
    when there are several (``shard_of``: tensor name -> shard number), then remove stale
    weight files; the names written. Every sharded writer ends here."""
    n = len(temps)
    finals = [layout.single] if n == 1 else [layout.shard(i + 1, n) for i in range(n)]
    for tmp, final in zip(temps, finals, strict=True):
        publish(tmp, out_dir / final)
    written = list(finals)
    if n > 1:
        # what save_pretrained writes (transformers reads "weight_map"; "metadata" is informative)
        index = {
            "metadata": {"total_parameters": total_parameters, "total_size": total_size},
            "weight_map": {k: finals[v] for k, v in sorted(shard_of.items())},
        }
        text = json.dumps(index, indent=2, sort_keys=True) + "\n"
        atomic_write(out_dir / layout.index, text.encode())
        written.append(layout.index)
    remove_stale(out_dir, set(written))
    return written


def write_sharded(
    tensors: Iterable[tuple[str, np.ndarray]],
    out_dir: str | os.PathLike[str],
    layout: CheckpointLayout,
    shard_size: int | None,
    save: SaveShard,
    aliases: Mapping[str, str] | None,
    share_aliases: bool,
) -> list[str]:
    if shard_size is not None and (not isinstance(shard_size, int) or shard_size <= 0):
        raise SourceError(f"shard_size must be a positive int, got {shard_size!r}")
    by_target = check_aliases(aliases)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    writer = ShardWriter(out, layout, shard_size, save, share_aliases)
    seen: set[str] = set()
    try:
        for name, array in tensors:
            if name in (aliases or {}):
                raise SourceError(f"tensor {name!r} is both written and an alias")
            writer.add(name, prepare(name, array), by_target.get(name, ()))
            seen.add(name)
        missing_targets(by_target, seen)
        return writer.finish()
    except BaseException:
        writer.abort()
        raise


def publish(tmp: Path, final: Path) -> None:
    """Rename a finished temporary file to its final name, with the usual file mode.

    Temporary files may be created 0600; the result should be readable like any file the
    user writes (0666 minus the umask).
    """
    os.chmod(tmp, 0o666 & ~umask())
    os.replace(tmp, final)


class Writeback:
    """Flushes a file being written to disk in the background, so that the ``fsync`` due
    before it is published (renamed into place) has little left to wait for.

    Without it that last ``fsync`` waited for a whole shard at once: 0.94 s of SmolLM2's
    ~9 s unpack (538 MB). Every ``every`` bytes written, a thread runs ``fdatasync`` while
    the writer goes on decoding and writing (at most one such thread at a time).
    """

    def __init__(self, fd: int, every: int = 64 << 20) -> None:
        self._fd, self._every, self._since = fd, every, 0
        self._thread: threading.Thread | None = None

    def wrote(self, nbytes: int) -> None:
        self._since += nbytes
        if self._since >= self._every and not (self._thread and self._thread.is_alive()):
            self._since = 0
            self._thread = threading.Thread(target=self._sync, name="llmc-writeback", daemon=True)
            self._thread.start()

    def _sync(self) -> None:
        with contextlib.suppress(OSError):  # finish()'s fsync reports any failure
            os.fdatasync(self._fd)

    def finish(self) -> None:
        if self._thread is not None:
            self._thread.join()
        os.fsync(self._fd)


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes) -> None:
    """``data`` into ``path`` through an exclusively created temporary file beside it."""
    with atomic_output(path) as f:
        f.write(data)
