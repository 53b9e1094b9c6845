"""The ``gguf`` output format: ``model.gguf``.

Two ways, tried in this order by ``unpack``:

- ``write_native``: the GGUF file the archive was packed from, byte for byte, when the
  archive holds every tensor of it in its ggml type (a lossless pack of a GGUF:
  ``original_gguf``); its SHA-256 is checked against the recorded one;
- ``write``: the decoded tensors as plain (unquantized) GGUF tensors through the ``gguf``
  package's ``GGUFWriter``, under the archive's names (Hugging Face's, not llama.cpp's:
  llama.cpp cannot run it), with a small honest header (``gguf_metadata``).

One tensor is in memory at a time; aliases are written as copies (GGUF has no aliases).
"""

from __future__ import annotations

import math
import os
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from llmc_format import dtypes
from llmc_format.errors import SourceError
from llmc_format.io.sink_base import (
    Writeback,
    check_aliases,
    fsync_file,
    missing_targets,
    prepare,
    publish,
)
from llmc_format.io.sinks import SinkJob, remove_stale

if TYPE_CHECKING:
    from llmc_format.container.reader import Reader

GGUF_NAME = "model.gguf"
CONFIG_NAME = "config.json"

#: format dtype -> (numpy dtype handed to GGUFWriter, ggml type name or None to let it infer).
_GGUF_TYPES: dict[str, tuple[str, str | None]] = {
    "float32": ("<f4", None), "float16": ("<f2", None), "float64": ("<f8", None),
    "bfloat16": ("<u2", "BF16"),
    "int8": ("<i1", None), "int16": ("<i2", None), "int32": ("<i4", None), "int64": ("<i8", None),
}
_GGML_MAX_DIMS = 4


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
    by_target = check_aliases(aliases)
    full_plan: list[tuple[str, str, tuple[int, ...], bool]] = []  # (name, dtype, shape, is a copy)
    for name, dtype, shape in plan:
        if name in (aliases or {}):
            raise SourceError(f"tensor {name!r} is both written and an alias")
        full_plan.append((name, dtype, tuple(shape), False))
        full_plan += [(alias, dtype, tuple(shape), True) for alias in by_target.get(name, ())]
    missing_targets(by_target, {name for name, _, _ in plan})
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
                arr = prepare(name, array)
                if dtypes.name_of(arr.dtype) != dtype or tuple(arr.shape) != shape:
                    raise SourceError(f"tensor {name!r} is {dtypes.name_of(arr.dtype)}{list(arr.shape)}, "
                                      f"planned as {dtype}{list(shape)}")
                data = arr.view(np.dtype(_GGUF_TYPES[dtype][0]))
            writer.write_tensor_data(data)
        if next(stream, None) is not None:
            raise SourceError("GGUF writer got more tensors than planned")
        writer.close()
        fsync_file(tmp)
        publish(tmp, out / GGUF_NAME)
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
    the recorded one (``DigestError`` otherwise, spec/FORMAT.md §7.8; nothing left behind).
    """
    from llmc_format.errors import DigestError
    from llmc_format.io.gguf_layout import rebuild

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".{GGUF_NAME}.{uuid.uuid4().hex[:12]}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            back = Writeback(f.fileno())

            def write(b: bytes | memoryview) -> None:
                f.write(b)
                back.wrote(len(b))

            digest = rebuild(record, tensor_bytes, write)
            f.flush()
            back.finish()
        if digest != record["sha256"]:
            raise DigestError(f"rebuilt GGUF has SHA-256 {digest}, the packed file had "
                              f"{record['sha256']}")
        publish(tmp, out / GGUF_NAME)
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




def write(job: SinkJob) -> list[str]:
    """The ``gguf`` sink from decoded values: ``model.gguf`` with float tensors."""
    return write_gguf(job.plan, job.tensors, job.out_dir,
                      architecture=architecture(job.reader) if job.reader else "unknown",
                      metadata=gguf_metadata(job.reader) if job.reader else None,
                      aliases=job.aliases)


def write_native(reader: Reader, out_dir: Path,
                 progress: Callable[[str, int, int], None] | None) -> list[str] | None:
    """``model.gguf`` as the GGUF file ``reader``'s archive was packed from, byte for byte,
    when the archive holds every tensor of it in its ggml type; None otherwise."""
    record = original_gguf(reader)
    if record is None:
        return None
    return write_gguf_original(record, _native_reader(reader, progress), out_dir)


def original_gguf(r: Reader) -> dict | None:
    """The archive's GGUF layout record when every tensor it takes from the archive is
    stored in its GGUF type (a lossless pack of a GGUF file), else None: the GGUF is then
    written from decoded values (``write_gguf``)."""
    from llmc_format.codecs.stages import kept_encoding
    from llmc_format.io.gguf_layout import LAYOUT_ATTACHMENT, parse_record, referenced

    if LAYOUT_ATTACHMENT not in r.attachment_names():
        return None
    record = parse_record(r.read_attachment(LAYOUT_ATTACHMENT))
    names = set(r.keys())
    for name, (ggml_type, _) in referenced(record).items():
        e = r.resolve(name) if name in names else None
        kept = kept_encoding(e.pipeline) if e is not None else None
        if kept is None or kept.get("type") != ggml_type:
            return None
    return record


def _native_reader(r: Reader, progress: Callable[[str, int, int], None] | None
                   ) -> Callable[[str], bytes]:
    """``tensor_bytes`` for ``write_gguf_original``, reporting progress in weights."""
    from llmc_format.decode import read_native_blocks

    total = sum(r.tensor(n).numel for n in r.keys() if r.tensor(n).alias_of is None)
    done = 0

    def get(name: str) -> bytes:
        nonlocal done
        data = read_native_blocks(r, name)
        done += r.resolve(name).numel
        if progress:
            progress(name, done, total)
        return data

    return get


def architecture(r: Reader) -> str:
    """GGUF ``general.architecture``: the config's model_type (informative: the tensor names
    are Hugging Face's, so llama.cpp's loader for that architecture will not find its own)."""
    from llmc_format.io.hfmodel import config_dict

    config = config_dict(r) or {}
    model_type = config.get("model_type")
    return model_type if isinstance(model_type, str) and model_type else "unknown"


def gguf_metadata(r: Reader) -> dict[str, str | int | float | bool]:
    """A minimal, honest GGUF header: where the tensors come from and how they are named."""
    meta: dict[str, str | int | float | bool] = {
        "general.type": "model",
        "llmc.tensor_names": "huggingface",
        "llmc.tool": str(r.metadata.get("tool", "llmc")),
    }
    source = r.metadata.get("source")
    name = (source.get("model_name") or source.get("name")) if isinstance(source, dict) else None
    if isinstance(name, str) and name:
        meta["general.name"] = name
    if CONFIG_NAME in r.attachment_names():
        meta["llmc.hf_config_json"] = r.read_attachment(CONFIG_NAME).decode("utf-8", "replace")
    return meta
