"""pack: a model source -> one .llmc archive.

Reads tensors one at a time from the source, chooses each one's pipeline (``policy``),
encodes it — up to ``jobs`` tensors concurrently, since encoders are external processes
or release the GIL — and writes blobs in source order, so the archive is byte-identical
whatever the job count. At most ``jobs + 1`` tensors are in memory at once.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import llmc_format
from llmc_format.codecs.base import ArraySpec
from llmc_format.codecs.pipeline import EncodedTensor, decode_encoded, encode_tensor
from llmc_format.container import layout
from llmc_format.container.index import TensorEntry
from llmc_format.container.reader import Reader
from llmc_format.container.writer import Writer
from llmc_format.dtypes import name_of
from llmc_format.errors import CodecError, SourceError
from llmc_format.io.base import Source
from llmc_format.io.base import TensorEntry as SourceTensor
from llmc_format.pipeline.policy import Policy
from llmc_format.rd.metrics import distortion

#: progress(event, tensor_name, done_weights, total_weights)
Progress = Callable[[str, str, int, int], None]


def tensor_digest(array: np.ndarray) -> int:
    """XXH3-64 of a tensor's little-endian C-order bytes (the format's digest rule)."""
    return layout.checksum(np.asarray(order="C", a=array).tobytes())


@dataclass
class PackedTensor:
    """An encoded tensor ready to be written: blobs plus everything its entry records."""

    name: str
    spec: ArraySpec
    encoded: EncodedTensor
    quant: dict[str, Any] | None
    rd: dict[str, Any] | None
    digest: dict[str, int]


def encode_one(name: str, array: np.ndarray, pipeline: list[dict[str, Any]]) -> PackedTensor:
    """Encode one tensor and measure what it cost and what it lost."""
    array = np.asarray(order="C", a=array)
    spec = ArraySpec(name_of(array.dtype), tuple(array.shape), name)
    t0 = time.perf_counter()
    enc = encode_tensor(array, spec, pipeline)
    t_enc = time.perf_counter() - t0
    src_digest = tensor_digest(array)
    stored = sum(len(b) for _, b in enc.blobs)
    lossy = len(enc.pipeline) > 1 or enc.pipeline[-1]["id"] != "exact"
    t0 = time.perf_counter()
    decoded = decode_encoded(enc, spec)
    t_dec = time.perf_counter() - t0
    dec_digest = tensor_digest(decoded)
    rd: dict[str, Any] = {
        "bytes": stored,
        "bpw": 8.0 * stored / max(spec.numel, 1),
        "encode_seconds": round(t_enc, 4),
        "decode_seconds": round(t_dec, 4),
    }
    quant = None
    if lossy:
        rd.update(distortion(array, decoded))
        video = enc.pipeline[-1]
        if "qp" in video:
            rd["qp"] = video["qp"]
        rd["codec"] = video["id"]
        quant = enc.info[0] if enc.info and enc.pipeline[0]["id"] == "affine" else None
    elif dec_digest != src_digest:
        raise CodecError(f"tensor {name!r}: lossless round trip is not bit-exact (codec bug)")
    return PackedTensor(name, spec, enc, quant, rd,
                        {"source": src_digest, "decoded": dec_digest})


def copy_packed(reader: Reader, name: str) -> PackedTensor:
    """A tensor of an existing archive, as stored (blobs verified), ready to write again."""
    e = reader.tensor(name)
    blobs = [(b.stage, reader.read_blob(b, f"tensor {name!r}")) for b in e.blobs]
    return PackedTensor(name, ArraySpec(e.dtype, e.shape, name),
                        EncodedTensor(blobs, [dict(c) for c in e.pipeline], []),
                        e.quant, dict(e.rd) if e.rd else None, dict(e.digest or {}))


def write_packed(writer: Writer, p: PackedTensor) -> TensorEntry:
    refs = tuple(writer.add_blob(b, stage) for stage, b in p.encoded.blobs)
    entry = TensorEntry(p.name, p.spec.dtype, p.spec.shape, tuple(p.encoded.pipeline), refs,
                        None, p.quant, p.rd, p.digest)
    writer.add_tensor(entry)
    return entry


def default_jobs() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
               else os.cpu_count() or 1)


def pack(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    policy: Policy | None = None,
    jobs: int | None = None,
    user_metadata: dict[str, Any] | None = None,
    created: str | None = None,
    progress: Progress | None = None,
    alignment: int = layout.DEFAULT_ALIGNMENT,
    qp_overrides: dict[str, int] | None = None,
) -> Path:
    """Pack the model at ``src`` (file or directory) into the archive ``dst``; return ``dst``.

    ``created`` is written into the metadata only when given (archives are reproducible
    byte for byte by default). ``qp_overrides`` maps tensor names to QPs (RD allocation).
    """
    from llmc_format.io import open_source

    with open_source(src) as source:
        return pack_source(source, dst, policy=policy, jobs=jobs, user_metadata=user_metadata,
                           created=created, progress=progress, alignment=alignment,
                           qp_overrides=qp_overrides)


def pack_source(
    source: Source,
    dst: str | os.PathLike[str],
    *,
    policy: Policy | None = None,
    jobs: int | None = None,
    user_metadata: dict[str, Any] | None = None,
    created: str | None = None,
    progress: Progress | None = None,
    alignment: int = layout.DEFAULT_ALIGNMENT,
    qp_overrides: dict[str, int] | None = None,
    rd_records: dict[str, dict[str, Any]] | None = None,
    extra_metadata: dict[str, Any] | None = None,
    reuse: Reader | None = None,
    reuse_names: set[str] | None = None,
) -> Path:
    """Pack an open ``Source``: see ``pack``.

    RD packing adds: ``rd_records`` (merged into each tensor's ``rd``), ``extra_metadata``
    (merged into the file metadata), and ``reuse``/``reuse_names``: tensors copied blob
    for blob from an earlier archive instead of being encoded again.
    """
    policy = policy or Policy()
    jobs = jobs or default_jobs()
    qp_overrides = qp_overrides or {}
    metadata: dict[str, Any] = {
        "tool": f"llmc-format {llmc_format.__version__}",
        "source": source.describe(),
        "policy": {"codec": policy.codec, "qp": policy.qp, "bits": policy.bits},
        "user": dict(user_metadata or {}),
    }
    if created is not None:
        metadata["created"] = created
    metadata.update(extra_metadata or {})
    rd_records = rd_records or {}
    reuse_names = reuse_names or set()
    items = list(source.tensors())
    specs = {name: entry.spec for name, entry in items}
    total = sum(s.numel for s in specs.values())
    done = 0

    def work(name: str, entry: SourceTensor) -> PackedTensor:
        if reuse is not None and name in reuse_names:
            packed = copy_packed(reuse, name)
        else:
            pipe = policy.pipeline(name, entry.dtype, entry.shape, qp_overrides.get(name))
            packed = encode_one(name, entry(), pipe)
        if name in rd_records:
            packed.rd = {**(packed.rd or {}), **rd_records[name]}
        return packed

    with Writer(dst, alignment=alignment, metadata=metadata) as writer, \
            ThreadPoolExecutor(max_workers=jobs) as pool:
        pending: deque[tuple[str, Future[PackedTensor]]] = deque()
        stream = iter(items)

        def fill() -> None:
            # at most jobs+1 tensors loaded at once: bounded memory
            while len(pending) < jobs + 1:
                nxt = next(stream, None)
                if nxt is None:
                    return
                pending.append((nxt[0], pool.submit(work, *nxt)))

        fill()
        while pending:
            name, fut = pending.popleft()
            packed = fut.result()
            write_packed(writer, packed)
            done += packed.spec.numel
            if progress:
                progress("tensor", name, done, total)
            fill()
        for alias, target in source.aliases().items():
            t = specs.get(target)
            if t is None:
                raise SourceError(f"alias {alias!r} points at {target!r}, which the source lacks")
            writer.add_tensor(TensorEntry(alias, t.dtype, t.shape, alias_of=target))
        for rel, data in source.attachments():
            writer.add_attachment(rel, data)
    return Path(dst)
