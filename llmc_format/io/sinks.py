"""Writing tensors and attachments out as a model directory its loaders read.

Three checkpoint formats, each laid out as the tool that reads it expects:

- ``write_safetensors``: what ``save_pretrained`` writes: ``model.safetensors``, or shards
  ``model-00001-of-0000N.safetensors`` plus ``model.safetensors.index.json``;
- ``write_torch``: what ``save_pretrained(safe_serialization=False)`` wrote:
  ``pytorch_model.bin`` (a ``torch.save``'d state dict, loadable with
  ``torch.load(weights_only=True)``), or ``pytorch_model-0000i-of-0000N.bin`` plus
  ``pytorch_model.bin.index.json``;
- ``write_gguf``: ``model.gguf`` through the ``gguf`` package's ``GGUFWriter``, tensors
  under the names given (Hugging Face names, not llama.cpp's: llama.cpp cannot run it).

At most one shard (safetensors, torch) or one tensor (GGUF) is held in memory. Files are
written under temporary names and renamed once everything succeeded, so a crash leaves no
half-written file under a final name; then weight files of ours left from an earlier run
(any of the three formats) are removed, so a loader cannot pick a stale one.

Tied weights: ``aliases`` maps an alias name to its target; the alias is written right
after its target, as a copy (safetensors refuses tensors sharing memory; GGUF has no
aliases) or, for torch, as the same storage (what torch checkpoints of tied models hold).

``write_attachments`` writes config/tokenizer files, refusing any path that would land
outside the output directory: archives come from strangers.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import numpy as np

from llmc_format import dtypes
from llmc_format.errors import SourceError
from llmc_format.outfiles import atomic_output, umask

if TYPE_CHECKING:  # torch is imported only by the writers that need it (~3 s of start-up)
    import torch


@dataclass(frozen=True)
class CheckpointLayout:
    """File names of one sharded checkpoint format, as transformers looks them up."""

    single: str
    index: str
    shard_format: str
    shard_re: re.Pattern[str]

    def shard(self, i: int, n: int) -> str:
        """The name of shard ``i`` (1-based) of ``n``."""
        return self.shard_format.format(i=i, n=n)

    def owns(self, name: str) -> bool:
        return name in (self.single, self.index) or bool(self.shard_re.fullmatch(name))


SAFETENSORS = CheckpointLayout(
    "model.safetensors", "model.safetensors.index.json", "model-{i:05d}-of-{n:05d}.safetensors",
    re.compile(r"model-\d{5}-of-\d{5}\.safetensors"),
)
TORCH = CheckpointLayout(
    "pytorch_model.bin", "pytorch_model.bin.index.json", "pytorch_model-{i:05d}-of-{n:05d}.bin",
    re.compile(r"pytorch_model-\d{5}-of-\d{5}\.bin"),
)
GGUF_NAME = "model.gguf"

SINGLE_NAME = SAFETENSORS.single
INDEX_NAME = SAFETENSORS.index

#: format dtype -> (numpy dtype handed to GGUFWriter, ggml type name or None to let it infer).
_GGUF_TYPES: dict[str, tuple[str, str | None]] = {
    "float32": ("<f4", None), "float16": ("<f2", None), "float64": ("<f8", None),
    "bfloat16": ("<u2", "BF16"),
    "int8": ("<i1", None), "int16": ("<i2", None), "int32": ("<i4", None), "int64": ("<i8", None),
}
_GGML_MAX_DIMS = 4


def shard_name(i: int, n: int) -> str:
    """Hugging Face's safetensors shard file name (1-based ``i`` of ``n``)."""
    return SAFETENSORS.shard(i, n)


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
    arr = array if array.flags.c_contiguous else np.ascontiguousarray(array)  # 0-d stays 0-d
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    return arr


def _check_aliases(aliases: Mapping[str, str] | None) -> dict[str, list[str]]:
    """target -> its aliases; ``SourceError`` for an alias of an alias or of itself."""
    by_target: dict[str, list[str]] = {}
    for alias, target in (aliases or {}).items():
        if not isinstance(alias, str) or not isinstance(target, str) or not alias or alias == target:
            raise SourceError(f"alias {alias!r} -> {target!r} is not a pair of distinct names")
        if target in (aliases or {}):
            raise SourceError(f"alias {alias!r} points at {target!r}, itself an alias")
        by_target.setdefault(target, []).append(alias)
    return by_target


def _missing_targets(by_target: dict[str, list[str]], seen: set[str]) -> None:
    lost = {a: t for t, names in by_target.items() if t not in seen for a in names}
    if lost:
        alias, target = next(iter(lost.items()))
        raise SourceError(f"alias {alias!r} points at {target!r}, which was never written"
                          f"{f' (and {len(lost) - 1} more)' if len(lost) > 1 else ''}")


SaveShard = Callable[[dict[str, "torch.Tensor"], Path], None]


class _ShardWriter:
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
        _fsync(tmp)
        for name in tensors:
            self.shard_of[name] = index
        self._current, self._shared, self._current_bytes, self._pointers = {}, {}, 0, set()

    def finish(self) -> list[str]:
        """Write the last shard, then give every shard its final name; the names written."""
        if self._current or not self.temp_files:
            self.flush()
        n = len(self.temp_files)
        layout = self.layout
        finals = [layout.single] if n == 1 else [layout.shard(i + 1, n) for i in range(n)]
        for tmp, final in zip(self.temp_files, finals, strict=True):
            _publish(tmp, self.out_dir / final)
        self.temp_files = []
        written = list(finals)
        if n > 1:
            # what save_pretrained writes (transformers reads "weight_map"; "metadata" is informative)
            index = {
                "metadata": {"total_parameters": self.total_parameters, "total_size": self.total_size},
                "weight_map": {k: finals[v] for k, v in sorted(self.shard_of.items())},
            }
            text = json.dumps(index, indent=2, sort_keys=True) + "\n"
            _atomic_write(self.out_dir / layout.index, text.encode())
            written.append(layout.index)
        remove_stale(self.out_dir, set(written))
        return written

    def abort(self) -> None:
        for tmp in self.temp_files:
            tmp.unlink(missing_ok=True)
        self.temp_files = []


def _write_sharded(
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
    by_target = _check_aliases(aliases)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    writer = _ShardWriter(out, layout, shard_size, save, share_aliases)
    seen: set[str] = set()
    try:
        for name, array in tensors:
            if name in (aliases or {}):
                raise SourceError(f"tensor {name!r} is both written and an alias")
            writer.add(name, _prepare(name, array), by_target.get(name, ()))
            seen.add(name)
        _missing_targets(by_target, seen)
        return writer.finish()
    except BaseException:
        writer.abort()
        raise


def _safetensors_metadata(metadata: Mapping[str, str] | None) -> dict[str, str]:
    """``__metadata__`` with ``format=pt`` (transformers expects it); strings only."""
    meta = {"format": "pt", **dict(metadata or {})}
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise SourceError("safetensors metadata must map strings to strings")
    return meta


def write_safetensors(
    tensors: Iterable[tuple[str, np.ndarray]],
    out_dir: str | os.PathLike[str],
    shard_size: int | None = None,
    metadata: Mapping[str, str] | None = None,
    *,
    aliases: Mapping[str, str] | None = None,
) -> list[str]:
    """Write tensors as a Hugging Face safetensors checkpoint; return the file names written.

    ``shard_size`` is the most bytes of tensor data per shard (a larger tensor gets a shard
    of its own), as ``save_pretrained(max_shard_size=...)``; ``None`` writes one file.
    ``metadata`` is the safetensors ``__metadata__`` (strings); ``{"format": "pt"}`` is
    added because transformers expects it. ``aliases`` (alias -> target) are written as
    copies of their targets. Older weight files of ours in ``out_dir`` are removed.
    """
    from safetensors.torch import save_file

    meta = _safetensors_metadata(metadata)

    def save(shard: dict[str, torch.Tensor], path: Path) -> None:
        save_file(shard, str(path), metadata=meta)

    return _write_sharded(tensors, out_dir, SAFETENSORS, shard_size, save, aliases, False)


def write_safetensors_streamed(
    plan: Sequence[tuple[str, str, tuple[int, ...]]],
    tensors: Iterable[tuple[str, np.ndarray]],
    out_dir: str | os.PathLike[str],
    shard_size: int | None = None,
    metadata: Mapping[str, str] | None = None,
    *,
    aliases: Mapping[str, str] | None = None,
) -> list[str]:
    """``write_safetensors`` holding one tensor in memory at a time instead of a whole shard.

    A safetensors header gives every tensor's byte range before any data, so — as for
    GGUF — ``plan`` lists ``(name, dtype, shape)`` up front and ``tensors`` must then yield
    exactly those, in that order; each is written to disk as it arrives. Shards are cut
    as ``write_safetensors`` cuts them, and the files hold the same names, dtypes, values
    and ``__metadata__`` (tensors lie in plan order rather than sorted by dtype and name:
    safetensors readers do not depend on the order). Same temporary names, index, alias
    copies and stale-file removal as ``write_safetensors``.
    """
    if shard_size is not None and (not isinstance(shard_size, int) or shard_size <= 0):
        raise SourceError(f"shard_size must be a positive int, got {shard_size!r}")
    meta = _safetensors_metadata(metadata)
    codes = {name: code for code, name in dtypes.SAFETENSORS_NAMES.items()}
    by_target = _check_aliases(aliases)
    groups: list[tuple[str, str, tuple[int, ...], int, list[str]]] = []
    seen: set[str] = set()
    for name, dtype, shape in plan:
        for n in (name, *by_target.get(name, ())):
            if n in seen:
                raise SourceError(f"tensor {n!r} is written twice")
            seen.add(n)
        if name in (aliases or {}):
            raise SourceError(f"tensor {name!r} is both written and an alias")
        if dtype not in codes:
            raise SourceError(f"tensor {name!r}: dtype {dtype} has no safetensors type")
        nbytes = math.prod(shape) * dtypes.itemsize(dtype)
        groups.append((name, dtype, tuple(shape), nbytes, list(by_target.get(name, ()))))
    _missing_targets(by_target, {g[0] for g in groups})
    shards: list[list[int]] = [[]]
    current = 0
    for i, g in enumerate(groups):
        size = g[3] * (1 + len(g[4]))
        if shard_size is not None and shards[-1] and current + size > shard_size:
            shards.append([])
            current = 0
        shards[-1].append(i)
        current += size
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:12]
    temps: list[Path] = []
    stream = iter(tensors)
    try:
        for k, members in enumerate(shards):
            tmp = out / f".{tag}-{k:05d}.{SAFETENSORS.single}.tmp"
            temps.append(tmp)
            header: dict[str, Any] = {"__metadata__": meta}
            offset = 0
            for i in members:
                name, dtype, shape, nbytes, copies = groups[i]
                for n in (name, *copies):
                    header[n] = {"dtype": codes[dtype], "shape": list(shape),
                                 "data_offsets": [offset, offset + nbytes]}
                    offset += nbytes
            raw = json.dumps(header, separators=(",", ":")).encode()
            raw += b" " * (-len(raw) % 8)  # data starts 8-byte aligned, as safetensors pads
            with open(tmp, "wb") as f:
                f.write(len(raw).to_bytes(8, "little") + raw)
                writeback = _Writeback(f.fileno())
                for i in members:
                    name, dtype, shape, _, copies = groups[i]
                    got, array = next(stream, (None, None))
                    if got != name:
                        raise SourceError(f"safetensors writer expected tensor {name!r} next, "
                                          f"got {got!r}")
                    arr = _prepare(name, array)
                    if dtypes.name_of(arr.dtype) != dtype or tuple(arr.shape) != shape:
                        raise SourceError(f"tensor {name!r} is {dtypes.name_of(arr.dtype)}"
                                          f"{list(arr.shape)}, planned as {dtype}{list(shape)}")
                    data = arr.reshape(-1).view(np.uint8)
                    for _ in range(1 + len(copies)):
                        f.write(data.data)
                    writeback.wrote(data.nbytes * (1 + len(copies)))
                    del arr, array, data
                f.flush()
                writeback.finish()
        if next(stream, None) is not None:
            raise SourceError("safetensors writer got more tensors than planned")
        n = len(temps)
        finals = [SAFETENSORS.single] if n == 1 else [SAFETENSORS.shard(i + 1, n) for i in range(n)]
        for tmp, final in zip(temps, finals, strict=True):
            _publish(tmp, out / final)
        temps = []
    except BaseException:
        for tmp in temps:
            tmp.unlink(missing_ok=True)
        raise
    written = list(finals)
    if n > 1:
        weight_map = {name: finals[k] for k, members in enumerate(shards) for i in members
                      for name in (groups[i][0], *groups[i][4])}
        total_size = sum(g[3] * (1 + len(g[4])) for g in groups)
        total_params = sum(math.prod(g[2]) * (1 + len(g[4])) for g in groups)
        index = {"metadata": {"total_parameters": total_params, "total_size": total_size},
                 "weight_map": dict(sorted(weight_map.items()))}
        _atomic_write(out / SAFETENSORS.index, (json.dumps(index, indent=2, sort_keys=True)
                                               + "\n").encode())
        written.append(SAFETENSORS.index)
    remove_stale(out, set(written))
    return written


def write_torch(
    tensors: Iterable[tuple[str, np.ndarray]],
    out_dir: str | os.PathLike[str],
    shard_size: int | None = None,
    *,
    aliases: Mapping[str, str] | None = None,
) -> list[str]:
    """Write tensors as a torch checkpoint (``pytorch_model.bin``, or shards plus an index).

    Each file is a ``torch.save``'d ``{name: tensor}`` dict holding only tensors, so that
    ``torch.load(weights_only=True)`` (what transformers uses) reads it. An alias shares
    its target's storage, as in a torch checkpoint of a tied model.
    """

    import torch

    def save(shard: dict[str, torch.Tensor], path: Path) -> None:
        with open(path, "wb") as f:
            torch.save(shard, f)

    return _write_sharded(tensors, out_dir, TORCH, shard_size, save, aliases, True)


def write_gguf(
    plan: Sequence[tuple[str, str, tuple[int, ...]]],
    tensors: Iterable[tuple[str, np.ndarray]],
    out_dir: str | os.PathLike[str],
    *,
    architecture: str,
    metadata: Mapping[str, str | int | float | bool] | None = None,
    aliases: Mapping[str, str] | None = None,
) -> list[str]:
    """Write ``model.gguf``: every tensor of ``plan`` as a plain (unquantized) GGUF tensor.

    A GGUF header lists every tensor before any data, so ``plan`` gives ``(name, dtype,
    shape)`` up front and ``tensors`` must then yield exactly those, in that order (one is
    in memory at a time). Float types map to F32/F16/BF16/F64, integers to I8..I64; other
    dtypes (bool, unsigned, float8) have no GGUF type and are refused, naming the tensor.
    A 0-d tensor is written with shape ``[1]`` (GGUF tensors have 1 to 4 dimensions).
    ``metadata`` adds key/values (str, int, float, bool) after ``general.architecture``.
    ``aliases`` are written as copies right after their targets.
    """
    gguf = _import_gguf()
    by_target = _check_aliases(aliases)
    full_plan: list[tuple[str, str, tuple[int, ...], bool]] = []  # (name, dtype, shape, is a copy)
    for name, dtype, shape in plan:
        if name in (aliases or {}):
            raise SourceError(f"tensor {name!r} is both written and an alias")
        full_plan.append((name, dtype, tuple(shape), False))
        full_plan += [(alias, dtype, tuple(shape), True) for alias in by_target.get(name, ())]
    _missing_targets(by_target, {name for name, _, _ in plan})
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".{GGUF_NAME}.{uuid.uuid4().hex[:12]}.tmp"
    writer = gguf.GGUFWriter(tmp, arch=architecture)
    try:
        for key, value in (metadata or {}).items():
            _gguf_kv(writer, key, value)
        seen: set[str] = set()
        for name, dtype, shape, _ in full_plan:
            if name in seen:
                raise SourceError(f"tensor {name!r} is written twice")
            seen.add(name)
            np_dtype, raw = _gguf_type(name, dtype, shape)
            nbytes = math.prod(shape) * np.dtype(np_dtype).itemsize
            raw_type = getattr(gguf.GGMLQuantizationType, raw) if raw else None
            writer.add_tensor_info(name, shape or (1,), np.dtype(np_dtype), nbytes, raw_dtype=raw_type)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        stream = iter(tensors)
        for name, dtype, shape, is_copy in full_plan:
            if not is_copy:
                got_name, array = next(stream, (None, None))
                if got_name != name:
                    raise SourceError(f"GGUF writer expected tensor {name!r} next, got {got_name!r}")
                arr = _prepare(name, array)
                if dtypes.name_of(arr.dtype) != dtype or tuple(arr.shape) != shape:
                    raise SourceError(f"tensor {name!r} is {dtypes.name_of(arr.dtype)}{list(arr.shape)}, "
                                      f"planned as {dtype}{list(shape)}")
                data = arr.view(np.dtype(_GGUF_TYPES[dtype][0]))
            writer.write_tensor_data(data)
        if next(stream, None) is not None:
            raise SourceError("GGUF writer got more tensors than planned")
        writer.close()
        _fsync(tmp)
        _publish(tmp, out / GGUF_NAME)
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise
    remove_stale(out, {GGUF_NAME})
    return [GGUF_NAME]


def write_gguf_original(record: dict[str, Any], tensor_bytes: Callable[[str], bytes],
                        out_dir: str | os.PathLike[str]) -> list[str]:
    """Write ``model.gguf`` as the GGUF file the archive was packed from, byte for byte.

    ``record`` is a parsed GGUF layout record (``io.gguf_layout``); ``tensor_bytes(name)``
    returns an archive tensor's ggml blocks. The file is published only if its SHA-256 is
    the recorded one (``DigestError`` otherwise, nothing left behind).
    """
    from llmc_format.errors import DigestError
    from llmc_format.io.gguf_layout import rebuild

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".{GGUF_NAME}.{uuid.uuid4().hex[:12]}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            back = _Writeback(f.fileno())

            def write(b: bytes | memoryview) -> None:
                f.write(b)
                back.wrote(len(b))

            digest = rebuild(record, tensor_bytes, write)
            f.flush()
            back.finish()
        if digest != record["sha256"]:
            raise DigestError(f"rebuilt GGUF has SHA-256 {digest}, the packed file had "
                              f"{record['sha256']}")
        _publish(tmp, out / GGUF_NAME)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    remove_stale(out, {GGUF_NAME})
    return [GGUF_NAME]


def _import_gguf() -> Any:
    try:
        import gguf
    except ImportError as exc:  # optional dependency: pip install llmc-format[gguf]
        raise SourceError(f"writing GGUF files needs the 'gguf' package ({exc})") from None
    return gguf


def _gguf_type(name: str, dtype: str, shape: tuple[int, ...]) -> tuple[str, str | None]:
    if dtype not in _GGUF_TYPES:
        raise SourceError(f"tensor {name!r}: dtype {dtype} has no GGUF type (GGUF stores "
                          f"{', '.join(sorted(_GGUF_TYPES))})")
    if len(shape) > _GGML_MAX_DIMS:
        raise SourceError(f"tensor {name!r}: {len(shape)} dimensions, GGUF allows at most "
                          f"{_GGML_MAX_DIMS}")
    return _GGUF_TYPES[dtype]


def _gguf_kv(writer: Any, key: str, value: object) -> None:
    if isinstance(value, bool):
        writer.add_bool(key, value)
    elif isinstance(value, int):
        writer.add_uint64(key, value) if value >= 0 else writer.add_int64(key, value)
    elif isinstance(value, float):
        writer.add_float64(key, value)
    elif isinstance(value, str):
        writer.add_string(key, value)
    else:
        raise SourceError(f"GGUF metadata {key!r}: {type(value).__name__} is not str/int/float/bool")


def remove_stale(out_dir: Path, keep: set[str]) -> None:
    """Remove weight files of ours (any format) not in ``keep``: transformers prefers
    safetensors over .bin, so a stale file of another format could shadow a fresh one."""
    for path in out_dir.iterdir():
        name = path.name
        ours = name == GGUF_NAME or SAFETENSORS.owns(name) or TORCH.owns(name)
        if ours and name not in keep and (path.is_file() or path.is_symlink()):
            path.unlink()


def _publish(tmp: Path, final: Path) -> None:
    """Rename a finished temporary file to its final name, with the usual file mode.

    Temporary files may be created 0600; the result should be readable like any file the
    user writes (0666 minus the umask).
    """
    os.chmod(tmp, 0o666 & ~umask())
    os.replace(tmp, final)


class _Writeback:
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


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write(path: Path, data: bytes) -> None:
    """``data`` into ``path`` through an exclusively created temporary file beside it."""
    with atomic_output(path) as f:
        f.write(data)


def check_relative_path(rel: object) -> PurePosixPath:
    """A safe relative posix path, or ``SourceError`` (``container.names.path_problem``:
    no absolute path, ``..``/``.``/empty parts, control or Windows-forbidden characters,
    overlong components, device names). The one check every attachment writer uses."""
    from llmc_format.container.names import path_problem

    problem = path_problem(rel)
    if problem is not None:
        raise SourceError(f"attachment path {rel!r} {problem}")
    assert isinstance(rel, str)
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
