"""unpack: an archive -> a model directory (weights plus the config/tokenizer attachments).

The directory is what the model's own tools load: ``--format safetensors`` (default) is
what ``save_pretrained`` writes, so ``AutoModel.from_pretrained(dir)`` and
``AutoTokenizer.from_pretrained(dir)`` work offline; ``pt`` writes ``pytorch_model.bin``
(a ``torch.save``'d state dict); ``gguf`` writes ``model.gguf``: the packed GGUF file
itself, byte for byte, when the archive holds every tensor of it in its ggml type (a
lossless pack of a GGUF: ``io.gguf_sink.original_gguf``); else float tensors under the archive's names,
for the gguf tool chain (llama.cpp cannot run that one, the names are Hugging Face's).
Tensors are decoded ``jobs`` at a time, in order; safetensors and GGUF are written as
the tensors arrive (one tensor in memory besides those being decoded), ``pt`` holds one
shard (``torch.save`` writes a whole file at once). Each format is a ``SinkFormat`` of
``io/sinks.py``'s registry; this module stages, locks and publishes whatever it writes.

Tied weights (an archive entry with ``alias_of``: the data is stored once), ``tied=``:

- ``"auto"`` (default): leave out the aliases transformers re-ties by itself from
  ``config.json`` (``tie_word_embeddings``), exactly as ``save_pretrained`` leaves them
  out; write any other alias as a copy (pt: sharing its target's storage). Without
  transformers or a config.json every alias is written.
- ``"copy"``: write every alias (a copy in safetensors/GGUF, shared storage in pt).
- ``"drop"``: write no alias.

``dtype`` casts float tensors and, so that transformers' default ``dtype="auto"`` loads
them as cast, sets the ``dtype``/``torch_dtype`` recorded in ``config.json`` (when it
records one) to match; the config is otherwise copied byte for byte.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from llmc_format import dtypes
from llmc_format.container.layout import is_internal_attachment
from llmc_format.container.names import STAGE_MARK
from llmc_format.container.reader import Reader
from llmc_format.decode import read_tensor
from llmc_format.errors import LlmcError, OutputError
from llmc_format.io.sinks import FORMAT_NAMES, SINK_FORMATS, SinkFormat, SinkJob, remove_stale, sink_format
from llmc_format.outfiles import (
    OutputLock,
    check_output_dir,
    fsync_dir,
    output_errors,
    temp_dir,
    umask,
)
from llmc_format.units import parse_size

CONFIG_NAME = "config.json"

#: the output formats (``io/sinks.py``), as the CLI lists them
FORMATS = FORMAT_NAMES
TIED_MODES = ("auto", "copy", "drop")
#: short names accepted for ``dtype`` (the CLI's --dtype)
DTYPE_ALIASES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}
CAST_DTYPES = ("bfloat16", "float16", "float32")


@dataclass
class UnpackResult:
    """What ``unpack`` wrote. ``os.fspath(result)`` is the output directory."""

    path: Path
    format: str
    #: weight files written (relative to ``path``), shards first, index last
    files: list[str]
    attachments: list[str]
    #: aliases left out (alias -> target), and why
    tied_dropped: dict[str, str] = field(default_factory=dict)
    tied_reason: str = ""
    #: aliases written (a copy, or shared storage in pt)
    tied_written: dict[str, str] = field(default_factory=dict)

    def __fspath__(self) -> str:
        return str(self.path)


def normalize_dtype(dtype: str | None) -> str | None:
    """``bf16``/``fp16``/``fp32`` or the full names -> the format dtype name; ``LlmcError`` else."""
    if dtype is None:
        return None
    name = DTYPE_ALIASES.get(dtype, dtype)
    if name not in CAST_DTYPES:
        raise LlmcError(f"dtype must be bf16, fp16 or fp32 (or {', '.join(CAST_DTYPES)}), "
                        f"not {dtype!r}")
    return name


def _cast_to(reader: Reader, name: str, dtype: str | None) -> str:
    stored = reader.tensor(name).dtype
    return dtype if dtype is not None and stored in dtypes.FLOAT_DTYPES else stored


def iter_tensors(reader: Reader, dtype: str | None = None,
                 progress: Callable[[str, int, int], None] | None = None,
                 names: list[str] | None = None,
                 jobs: int = 1,
                 ) -> Iterator[tuple[str, np.ndarray]]:
    """Decode tensors in archive order or ``names``' order, with bounded memory.

    ``jobs`` tensors are decoded at once on threads (the decoders release the GIL: PyAV
    around libavcodec, zstd and numpy in ``exact``), results still in order. Decoding runs
    ahead of the caller by up to ``ahead_window(jobs)`` tensors as long as they hold at
    most ``jobs`` times the largest tensor's bytes (``Executor.map_ordered``'s budget), so
    the decoders stay busy past a slow tensor at the head of the line without holding
    more than ``jobs + 2`` large tensors at once. Float tensors are cast to ``dtype``
    when given. ``progress(name, done, total)`` counts weights, so the bar moves in
    proportion to the work.
    """
    from llmc_format.pipeline.executor import LocalExecutor, ahead_window

    names = reader.keys() if names is None else names
    sizes = [reader.tensor(n).numel for n in names]
    total, done = sum(sizes), 0
    nbytes = {n: size * dtypes.itemsize(_cast_to(reader, n, dtype))
              for n, size in zip(names, sizes, strict=True)}
    budget = jobs * max(nbytes.values(), default=1)

    def decode(name: str) -> np.ndarray:
        arr = read_tensor(reader, name)  # Reader uses pread: safe from many threads
        target = _cast_to(reader, name, dtype)
        if target != dtypes.name_of(arr.dtype):
            arr = arr.astype(dtypes.to_numpy(target))
        return arr

    with LocalExecutor(jobs) as ex, contextlib.closing(ex.map_ordered(
            decode, names, ahead_window(jobs), cost=nbytes.__getitem__, budget=budget)) as arrays:
        for name, size, arr in zip(names, sizes, arrays, strict=True):
            yield name, arr
            done += size
            if progress:
                progress(name, done, total)


def plan_aliases(reader: Reader, tied: str) -> tuple[dict[str, str], dict[str, str], str]:
    """(aliases to write, aliases to leave out, why) for a ``tied`` mode."""
    from llmc_format.io.hfmodel import archive_aliases

    aliases = archive_aliases(reader)
    if tied not in TIED_MODES:
        raise LlmcError(f"tied must be one of {', '.join(TIED_MODES)}, not {tied!r}")
    if not aliases or tied == "copy":
        return aliases, {}, ""
    if tied == "drop":
        return {}, aliases, "tied=drop"
    retied, reason = _retied(reader, aliases)
    return {a: t for a, t in aliases.items() if a not in retied}, retied, reason


def _retied(reader: Reader, aliases: dict[str, str]) -> tuple[dict[str, str], str]:
    """The aliases transformers re-ties from config.json, or ({}, why none can be left out).

    The pack-time record (metadata ``tied``) answers when it was made for this config.json;
    else transformers is asked (importing it and building the model on the meta device).
    """
    from llmc_format.io.hfmodel import load_config, recorded_retied, retied_aliases

    if CONFIG_NAME not in reader.attachment_names():
        return {}, f"no {CONFIG_NAME}: tied tensors written in full"
    recorded = recorded_retied(reader, aliases)
    if recorded is not None:
        return recorded, f"transformers re-ties them from {CONFIG_NAME} (recorded at pack time)"
    try:
        retied = retied_aliases(load_config(reader), aliases, names=reader.keys())
    except Exception as exc:  # no transformers, unknown architecture, custom code...
        return {}, f"transformers cannot tell which tensors it re-ties ({exc}): written in full"
    return retied, f"transformers re-ties them from {CONFIG_NAME}"


def unpack(
    path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    format: str = "safetensors",  # mirrors the CLI's --format
    dtype: str | None = None,
    shard_size: int | str | None = None,
    tied: str = "auto",
    progress: Callable[[str, int, int], None] | None = None,
    jobs: int = 1,
) -> UnpackResult:
    """Write the archive's tensors (as ``format``) and attachments into ``out_dir``.

    ``dtype`` casts float tensors (``bf16``/``fp16``/``fp32``); ``shard_size`` (bytes or
    a size such as ``"2GB"``) splits safetensors/pt checkpoints as ``save_pretrained``
    does; ``tied`` is explained in the module docstring. Files already in ``out_dir`` are
    kept unless overwritten, except weight files of ours (any format), which are replaced
    so a loader cannot pick a stale one. ``jobs`` tensors are decoded at once (see
    ``iter_tensors``).

    Atomic: everything is written into a private staging directory beside ``out_dir``
    and moved into place only once complete (``publish_dir``), so a failure, a full disk
    or a kill leaves ``out_dir`` as it was; ``out_dir`` is locked meanwhile (a second
    unpack to it fails with ``OutputError``).
    """
    fmt = sink_format(format)
    dtype = normalize_dtype(dtype)
    shard = parse_size(shard_size) if isinstance(shard_size, str) else shard_size
    if shard is not None and not fmt.shards:
        sharded = ", ".join(f.name for f in SINK_FORMATS.values() if f.shards)
        raise LlmcError(f"shard_size applies to {sharded}; {format} is written as one file")
    given = Path(out_dir)
    out = Path(os.path.abspath(given))  # "." or "x/..": a name to stage and lock beside
    if not out.name:
        raise OutputError(f"{given}: cannot unpack into the root directory")
    check_output_dir(out)
    with Reader(path) as r:  # refuses names unsafe to unpack (container.names) at open
        written, dropped, reason = plan_aliases(r, tied)
        names = [n for n in r.keys() if r.tensor(n).alias_of is None]
        with output_errors(out):
            out.parent.mkdir(parents=True, exist_ok=True)
        with OutputLock(out), staging_dir(out) as stage, output_errors(out):
            native = fmt.write_native(r, stage, progress) if dtype is None else None
            if native is not None:  # the packed file itself, byte for byte
                files = native
                written, dropped, reason = {}, {}, ""
            else:
                stream = iter_tensors(r, dtype, progress, names, jobs)
                files = _write(r, fmt, stream, names, stage, dtype, shard, written)
            attachments = _write_attachments(r, stage, dtype)
            publish_dir(stage, out, files, attachments)
    return UnpackResult(given, format, files, attachments, dropped, reason if dropped else "",
                        written)


#: staging directories are ``.NAME.XXXXXXXX.unpack``, each holding ``STAGE_MARK``: what
#: proves a leftover one is ours to remove
STAGE_SUFFIX = ".unpack"


@contextlib.contextmanager
def staging_dir(out: Path) -> Iterator[Path]:
    """A fresh private directory ``.NAME.XXXXXXXX.unpack`` beside ``out`` for the duration
    of the block, removed afterwards (it is gone already if ``publish_dir`` renamed it).

    Staging directories of earlier runs killed before they could clean up are removed
    first — only those provably ours (our naming, a real directory holding
    ``STAGE_MARK``); the caller holds ``out``'s lock, so no running unpack owns them.
    """
    _remove_stale_stages(out)
    stage = temp_dir(out, STAGE_SUFFIX)
    try:
        with output_errors(out):
            fd = os.open(stage / STAGE_MARK, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.close(fd)
        yield stage
    finally:
        if os.path.lexists(stage):
            shutil.rmtree(stage, ignore_errors=True)


def _remove_stale_stages(out: Path) -> None:
    pattern = re.compile(re.escape(f".{out.name}.") + r"[A-Za-z0-9_]{8}" + re.escape(STAGE_SUFFIX))
    try:
        entries = os.listdir(out.parent)
    except OSError:
        return
    for name in entries:
        path = out.parent / name
        if not pattern.fullmatch(name):
            continue
        try:
            if stat.S_ISDIR(os.lstat(path).st_mode) and \
                    stat.S_ISREG(os.lstat(path / STAGE_MARK).st_mode):
                shutil.rmtree(path, ignore_errors=True)
        except OSError:
            continue


def publish_dir(stage: Path, out: Path, files: list[str], attachments: list[str]) -> None:
    """Move the staged output into place.

    ``out`` absent or an empty directory: one ``rename`` of the whole directory (atomic).
    ``out`` a non-empty directory (``--force``): the files written (the manifest) replace
    their namesakes one ``rename`` each, after every destination was checked (a directory
    or symlink where a file goes, or a file or symlink where a directory goes, is refused
    before anything moves); then weight files of ours not in the manifest are removed, so
    a loader cannot pick a stale one. Other files in ``out`` are kept.
    """
    os.unlink(stage / STAGE_MARK)
    if not os.path.lexists(out) or (out.is_dir() and not any(out.iterdir())):
        os.chmod(stage, 0o777 & ~umask())
        os.rename(stage, out)  # replaces an empty directory in one step
        fsync_dir(out.parent)
        return
    manifest = files + attachments
    for rel in manifest:
        _check_destination(out, rel)
    for rel in manifest:
        dest = out.joinpath(*rel.split("/"))
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(stage.joinpath(*rel.split("/")), dest)
    remove_stale(out, set(files))
    fsync_dir(out)


def _check_destination(out: Path, rel: str) -> None:
    """``rel`` can be renamed into ``out``: every parent is absent or a real directory,
    the place itself absent or a regular file."""
    parts = rel.split("/")
    here = out
    for i, part in enumerate(parts):
        here = here / part
        try:
            mode = os.lstat(here).st_mode
        except FileNotFoundError:
            return
        last = i == len(parts) - 1
        if (last and not stat.S_ISREG(mode)) or (not last and not stat.S_ISDIR(mode)):
            what = "a symlink" if stat.S_ISLNK(mode) else "a directory" if stat.S_ISDIR(mode) \
                else "a file" if stat.S_ISREG(mode) else "a special file"
            raise OutputError(f"{out}: cannot write {rel!r}: {here.relative_to(out)} is {what} "
                              f"already; nothing was changed")


def _write(r: Reader, fmt: SinkFormat, stream: Iterator[tuple[str, np.ndarray]],
           names: list[str], out: Path, dtype: str | None, shard: int | None,
           aliases: dict[str, str]) -> list[str]:
    plan = [(n, _cast_to(r, n, dtype), tuple(r.tensor(n).shape)) for n in names]
    return fmt.write(SinkJob(plan, stream, out, shard, aliases, r))


def _write_attachments(r: Reader, out: Path, dtype: str | None) -> list[str]:
    from llmc_format.io.attachments import write_attachments

    def items() -> Iterator[tuple[str, bytes]]:
        for a in r.attachments():
            if is_internal_attachment(a.name):
                continue
            data = r.read_attachment(a.name)
            yield a.name, _retyped_config(data, dtype) if a.name == CONFIG_NAME else data

    return write_attachments(items(), out)


def _retyped_config(data: bytes, dtype: str | None) -> bytes:
    """config.json with its recorded dtype set to ``dtype`` (when cast and recorded).

    transformers loads with ``dtype="auto"`` by default, which means the config's
    ``dtype``/``torch_dtype``: left at float32, an fp16 unpack would be loaded back as
    float32. Any other byte of the file is kept unless a dtype key must change.
    """
    from llmc_format.io.hfconfig import config_dict

    if dtype is None:
        return data
    try:
        config = config_dict(data)  # bounded: a hostile file is copied as it is
    except LlmcError:
        return data
    keys = [k for k in ("dtype", "torch_dtype") if isinstance(config, dict) and k in config]
    if not keys or all(config[k] == dtype for k in keys):
        return data
    for k in keys:
        config[k] = dtype
    return (json.dumps(config, indent=2, sort_keys=True) + "\n").encode()
