"""The ``safetensors`` output format: what ``save_pretrained`` writes.

``model.safetensors``, or shards ``model-00001-of-0000N.safetensors`` plus
``model.safetensors.index.json``. ``write_safetensors_streamed`` (what ``unpack`` uses)
holds one tensor in memory; ``write_safetensors`` (the public API's) one shard. Aliases
(tied weights) are written as copies: safetensors refuses tensors sharing memory.
"""

from __future__ import annotations

import json
import math
import os
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from llmc_format import dtypes
from llmc_format.errors import SourceError
from llmc_format.io.sink_base import (
    CheckpointLayout,
    Writeback,
    check_aliases,
    missing_targets,
    prepare,
    publish_shards,
    write_sharded,
)
from llmc_format.io.sinks import SinkJob

if TYPE_CHECKING:
    import torch

SAFETENSORS = CheckpointLayout(
    "model.safetensors", "model.safetensors.index.json", "model-{i:05d}-of-{n:05d}.safetensors"
)
SINGLE_NAME = SAFETENSORS.single
INDEX_NAME = SAFETENSORS.index


def shard_name(i: int, n: int) -> str:
    """Hugging Face's safetensors shard file name (1-based ``i`` of ``n``)."""
    return SAFETENSORS.shard(i, n)


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

    return write_sharded(tensors, out_dir, SAFETENSORS, shard_size, save, aliases, False)


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
    by_target = check_aliases(aliases)
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
    missing_targets(by_target, {g[0] for g in groups})
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
                writeback = Writeback(f.fileno())
                for i in members:
                    name, dtype, shape, _, copies = groups[i]
                    got, array = next(stream, (None, None))
                    if got != name:
                        raise SourceError(f"safetensors writer expected tensor {name!r} next, "
                                          f"got {got!r}")
                    arr = prepare(name, array)
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
        shard_of = {name: k for k, members in enumerate(shards) for i in members
                    for name in (groups[i][0], *groups[i][4])}
        total_size = sum(g[3] * (1 + len(g[4])) for g in groups)
        total_params = sum(math.prod(g[2]) * (1 + len(g[4])) for g in groups)
        return publish_shards(out, SAFETENSORS, temps, shard_of, total_size, total_params)
    except BaseException:
        for tmp in temps:
            tmp.unlink(missing_ok=True)  # those published are gone from here already
        raise


def write(job: SinkJob) -> list[str]:
    """The ``safetensors`` sink: streamed, one tensor in memory besides those decoding."""
    return write_safetensors_streamed(job.plan, job.tensors, job.out_dir,
                                      shard_size=job.shard_size, aliases=job.aliases)
