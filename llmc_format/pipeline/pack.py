"""pack: a model source -> one .llmc archive.

Reads tensors one at a time from the source, chooses each one's pipeline (``policy``),
encodes it — up to ``jobs`` tensors concurrently on an ``Executor`` (threads by default,
since encoders are external processes or release the GIL; or Ray workers) — and writes
blobs in source order, so the archive is byte-identical whatever the job count or
executor. At most ``jobs + 1`` tensors are in memory at once.

Reproducible by default: the creation time and the per-tensor encode/decode timings,
the only things that differ between two runs, are recorded only when asked for.

Resuming (``resume=True``, ``llmc pack --resume``): the writer journals finished tensors
(``container/journal.py``) under a fingerprint of the source description, the tensor list
and every option that changes the output; a rerun with the same fingerprint re-reads the
finished tensors only to check their source digests, skips encoding them, and produces
the same bytes as an uninterrupted pack.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import numpy as np

from llmc_format.codecs.base import ArraySpec
from llmc_format.codecs.registry import get_codec_class
from llmc_format.codecs.stages import (
    EncodedTensor,
    decode_encoded,
    digest_portable,
    encode_native,
    encode_tensor,
    is_lossless,
    kept_encoding,
)
from llmc_format.container import layout
from llmc_format.container.index import TensorEntry
from llmc_format.container.names import check_names
from llmc_format.container.reader import Reader
from llmc_format.container.writer import Writer
from llmc_format.dtypes import name_of
from llmc_format.errors import CodecError, EncoderRefusedError, LlmcError, SourceError
from llmc_format.io.base import Source, SourceTensor
from llmc_format.metrics import distortion
from llmc_format.pipeline.executor import Executor, LocalExecutor, Ready, ahead_window
from llmc_format.pipeline.policy import Policy
from llmc_format.runtime import default_jobs
from llmc_format.version import __version__

#: progress(event, tensor_name, done_weights, total_weights); events: "start" (encoding
#: begins; no name: none is done yet), "tensor" (one written), "resumed" (one kept from an
#: interrupted pack)
Progress = Callable[[str, str, int, int], None]


def tensor_digest(array: np.ndarray) -> int:
    """XXH3-64 of a tensor's little-endian C-order bytes (the format's digest rule).

    Hashes the array's own buffer (a byte view), not a ``tobytes()`` copy: a copy would
    double the memory of the largest tensor.
    """
    return layout.checksum(np.ascontiguousarray(array).reshape(-1).view(np.uint8))


def tensor_digests(source: int, pipeline: list[dict[str, Any]], decoded: np.ndarray,
                   decoded_digest: int | None = None) -> dict[str, int]:
    """The entry's ``digest``: ``source`` always; ``decoded`` (``decoded_digest`` when the
    caller hashed ``decoded`` already) unless the spec forbids it because a conforming
    reader may decode other bits (FORMAT.md §7.6, digest rule: a quantized ``ggml``
    tensor whose values hold a NaN)."""
    if not digest_portable(pipeline, decoded):
        return {"source": source}
    return {"source": source,
            "decoded": tensor_digest(decoded) if decoded_digest is None else decoded_digest}


@dataclass
class PackedTensor:
    """An encoded tensor ready to be written: blobs plus everything its entry records."""

    name: str
    spec: ArraySpec
    encoded: EncodedTensor
    quant: dict[str, Any] | None
    rd: dict[str, Any] | None
    digest: dict[str, int]


#: how many QPs above one the encoder refuses ``encode_one`` tries before giving up
QP_RETRIES = 16


def encode_one(name: str, array: np.ndarray, pipeline: list[dict[str, Any]], *,
               coarser_on_failure: bool = False) -> PackedTensor:
    """Encode one tensor and measure what it cost and what it lost.

    With ``coarser_on_failure`` (a QP the user gave, not one an RD allocation chose: the
    allocation handles refusals itself), a video stage whose encoder fails at its QP is
    retried at the next QPs up: libvvenc refuses the finest QPs on noise-like codes (its
    coefficient levels outgrow what it codes), so ``--qp 0`` then gets the finest QP the
    encoder accepts instead of an error. The entry's ``rd`` records ``qp_requested``."""
    array = np.asarray(order="C", a=array)
    spec = ArraySpec(name_of(array.dtype), tuple(array.shape), name)
    t0 = time.perf_counter()
    asked = None
    try:
        enc = encode_tensor(array, spec, pipeline)
    except EncoderRefusedError as exc:
        if not coarser_on_failure:
            raise
        enc, asked = _encode_coarser(array, spec, pipeline, exc)
    t_enc = time.perf_counter() - t0
    src_digest = tensor_digest(array)
    stored = sum(len(b) for _, b in enc.blobs)
    lossy = not is_lossless(enc.pipeline)
    t0 = time.perf_counter()
    decoded = decode_encoded(enc, spec)  # the video stage's own check decode, if it kept it
    enc.reconstruction = None  # not held while the tensor waits to be written
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
            if asked is not None:
                rd["qp_requested"] = asked
        rd["codec"] = video["id"]
        quant = quant_record(enc)
    elif dec_digest != src_digest:
        raise CodecError(f"tensor {name!r}: lossless round trip is not bit-exact (codec bug)")
    return PackedTensor(name, spec, enc, quant, rd,
                        tensor_digests(src_digest, enc.pipeline, decoded, dec_digest))


def _encode_coarser(array: np.ndarray, spec: ArraySpec, pipeline: list[dict[str, Any]],
                    failure: EncoderRefusedError) -> tuple[EncodedTensor, int]:
    """``pipeline`` encoded at the first QP above its video stage's that the encoder
    accepts, and the QP asked for; ``failure`` again when there is none (or no QP)."""
    video = pipeline[-1]
    qp, qp_range = video.get("qp"), get_codec_class(video["id"]).qp_range
    if not isinstance(qp, int) or isinstance(qp, bool) or qp_range is None:
        raise failure
    for q in range(qp + 1, min(qp + QP_RETRIES, qp_range[1]) + 1):
        try:
            return encode_tensor(array, spec, [*pipeline[:-1], {**video, "qp": q}]), qp
        except EncoderRefusedError:
            continue
    raise failure


def quant_record(enc: EncodedTensor) -> dict[str, Any] | None:
    """The entry's ``quant``: the facts of the stage that made the codec's samples (the
    last array stage: ``affine``/``blockdct``), with those of any array stage before it
    (``diagscale``) under that stage's id. None when the pipeline has no array stage."""
    kinds = [get_codec_class(c["id"]).kind for c in enc.pipeline]
    array_stages = [i for i, k in enumerate(kinds) if k == "array" and i < len(enc.info)]
    if not array_stages:
        return None
    last = array_stages[-1]
    quant = dict(enc.info[last])
    for i in array_stages[:-1]:
        if enc.info[i]:
            quant[enc.pipeline[i]["id"]] = enc.info[i]
    return quant


def encode_native_one(name: str, raw: np.ndarray, spec: ArraySpec,
                      pipeline: list[dict[str, Any]]) -> PackedTensor:
    """Encode a tensor from its source's own bytes (``NativeData``); ``encode_native``
    checks that the stored blocks decode back to them."""
    t0 = time.perf_counter()
    enc = encode_native(raw, spec, pipeline)
    t_enc = time.perf_counter() - t0
    src_digest = tensor_digest(raw)
    t0 = time.perf_counter()
    decoded = decode_encoded(enc, spec)
    t_dec = time.perf_counter() - t0
    stored = sum(len(b) for _, b in enc.blobs)
    rd: dict[str, Any] = {
        "bytes": stored,
        "bpw": 8.0 * stored / max(spec.numel, 1),
        "source_bytes": int(raw.nbytes),
        "encode_seconds": round(t_enc, 4),
        "decode_seconds": round(t_dec, 4),
    }
    return PackedTensor(name, spec, enc, None, rd, tensor_digests(src_digest, enc.pipeline, decoded))


def native_pipeline(entry: SourceTensor, pipeline: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
    """The pipeline keeping ``entry``'s source encoding, when ``pipeline`` (the policy's
    choice) is lossless and the source offers one; else None."""
    if entry.native is None or not is_lossless(pipeline):
        return None
    return [dict(c) for c in entry.native.pipeline]


def encode_entry(name: str, entry: SourceTensor, pipeline: list[dict[str, Any]]) -> PackedTensor:
    """Encode a source tensor with the policy's ``pipeline``, or in its source encoding
    when the pipeline is lossless and the source has one (``NativeData``)."""
    native = native_pipeline(entry, pipeline)
    if native is not None:
        assert entry.native is not None
        return encode_native_one(name, entry.native.load(), entry.spec, native)
    return encode_one(name, entry(), pipeline)


def source_digest(entry: SourceTensor, stored: TensorEntry) -> int:
    """The source digest a stored tensor records: of the source's own bytes when it was
    stored natively (its final stage holds source blocks), else of its values."""
    native = entry.native is not None and kept_encoding(stored.pipeline) is not None
    return tensor_digest(entry.native.load() if native else entry())  # type: ignore[union-attr]


#: rd keys that measure this run rather than the data: left out unless timings are asked for
TIMING_KEYS = ("encode_seconds", "decode_seconds")


@dataclass
class EncodeJob:
    """One tensor to encode. With ``array`` set (not ``load``) it is plain data that can be
    pickled to a remote worker; with ``load`` the worker reads the tensor itself."""

    name: str
    pipeline: list[dict[str, Any]]
    array: np.ndarray | None = None
    load: Callable[[], np.ndarray] | None = None
    #: the tensor's bytes (the executor's memory budget counts them)
    nbytes: int = 0
    #: set when ``array``/``load`` give the source's own bytes (``NativeData``) for
    #: ``pipeline``, whose decoded values have this spec
    native_spec: ArraySpec | None = None
    #: the QP is the user's (not an RD allocation's): see ``encode_one``
    coarser_on_failure: bool = False


def run_job(job: EncodeJob) -> PackedTensor:
    """What an executor worker runs: load the tensor if needed, then ``encode_one``."""
    if job.array is not None:
        array = job.array
    elif job.load is not None:
        array = job.load()
    else:
        raise SourceError(f"tensor {job.name!r}: encode job has neither an array nor a loader")
    if job.native_spec is not None:
        return encode_native_one(job.name, array, job.native_spec, job.pipeline)
    return encode_one(job.name, array, job.pipeline, coarser_on_failure=job.coarser_on_failure)


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


def pack_fingerprint(metadata: dict[str, Any], policy: Policy, alignment: int,
                     items: list[tuple[str, SourceTensor]], aliases: dict[str, str],
                     **options: Any) -> str:
    """Hash of everything that decides the archive's bytes, for ``resume``: metadata (tool
    version, source description...), policy, alignment, tensor names/dtypes/shapes,
    aliases, and ``options`` (QP overrides, RD records, reused tensors...)."""
    facts = {
        "metadata": {k: v for k, v in metadata.items() if k != "created"},
        "policy": dataclasses.asdict(policy),
        "alignment": alignment,
        "tensors": [[name, e.dtype, list(e.shape)] for name, e in items],
        "aliases": sorted(aliases.items()),
        "options": options,
    }
    return f"{layout.checksum(msgpack.packb(facts, use_bin_type=True, default=repr)):016x}"


def _check_resumed(resumed: tuple[TensorEntry, ...], items: list[tuple[str, SourceTensor]],
                   progress: Progress | None, total: int) -> int:
    """The finished tensors must be the source's first ones, with unchanged data (their
    source digests are recomputed: a source edited in place keeps its size). Returns the
    number of weights they hold."""
    if len(resumed) > len(items):
        raise LlmcError("cannot resume: the interrupted pack holds more tensors than the source")
    done = 0
    for entry, (name, src) in zip(resumed, items, strict=False):
        if (entry.name, entry.dtype, entry.shape) != (name, src.dtype, tuple(src.shape)):
            raise LlmcError(f"cannot resume: the interrupted pack wrote tensor {entry.name!r} "
                            f"where the source now has {name!r}; pack without --resume")
        if (entry.digest or {}).get("source") != source_digest(src, entry):
            raise LlmcError(f"cannot resume: tensor {name!r} changed in the source since the "
                            "interrupted pack; pack without --resume")
        done += entry.numel
        if progress:
            progress("resumed", name, done, total)
    return done


def _tied_record(aliases: dict[str, str], attachments: list[tuple[str, bytes]],
                 names: list[str]) -> dict[str, Any] | None:
    """Metadata ``tied``: which aliases transformers re-ties (for unpack; see
    ``llmc_format.io.hfmodel.retied_record``); None without aliases or a config.json."""
    config = dict(attachments).get("config.json")
    if not aliases or config is None:
        return None
    from llmc_format.io.hfmodel import retied_record

    return retied_record(config, aliases, names + sorted(aliases))


def with_encoder_threads(policy: Policy, workers: int, *, remote: bool = False) -> Policy:
    """``policy`` with the video encoders' thread count set, unless the caller set one.

    ``threads`` is a run-time knob of the video codecs (not stored; it does not change the
    bitstream). ``workers`` encoders run at once; each gets its share of the usable cores
    (one on a ``remote`` worker, which reserves one CPU per task): with more threads
    than that, libvvenc spends 10–20% more CPU for the same frame and each process
    starts up 0.04 CPU s slower (SmolLM2 layer 3, 2 cores; docs/results/speed.md).
    """
    if not policy.codec_class.threaded or "threads" in policy.video:
        return policy
    threads = 1 if remote else max(1, default_jobs() // workers)
    return dataclasses.replace(policy, video={**policy.video, "threads": threads})


def _job_bytes(job: EncodeJob | Ready[PackedTensor]) -> int:
    """The source bytes a job holds while it runs (a copied tensor holds none)."""
    return 0 if isinstance(job, Ready) else job.nbytes


def pack(src: str | os.PathLike[str], dst: str | os.PathLike[str], **options: Any) -> Path:
    """Pack the model at ``src`` (file or directory) into the archive ``dst``; return ``dst``.

    ``options`` are those of ``pack_source`` (policy, jobs, user_metadata, created,
    progress, alignment, qp_overrides, executor, record_timings, resume...).
    """
    from llmc_format.io import open_source

    with open_source(src) as source:
        return pack_source(source, dst, **options)


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
    executor: Executor | None = None,
    record_timings: bool = False,
    resume: bool = False,
    journal_interval: float | None = None,
    new: bool | None = None,
) -> Path:
    """Pack an open ``Source`` into the archive ``dst``.

    ``created`` is written into the metadata only when given, and the per-tensor
    ``encode_seconds``/``decode_seconds`` only with ``record_timings`` (archives are
    reproducible byte for byte by default). ``qp_overrides`` maps tensor names to QPs (RD
    allocation). ``executor`` runs the encoding (default: ``jobs`` local threads; see
    ``pipeline.executor`` for Ray); the caller keeps ownership of it. ``resume``
    continues an interrupted pack of the same source with the same options;
    ``journal_interval`` is the seconds between resume-journal commits (default: the
    writer's; 0 = after every tensor). ``new``: ``dst`` did not exist when the command
    began (``Writer``'s ``new``; None: whether it exists when the writer starts).

    RD packing adds: ``rd_records`` (merged into each tensor's ``rd``), ``extra_metadata``
    (merged into the file metadata), and ``reuse``/``reuse_names``: tensors copied blob
    for blob from an earlier archive instead of being encoded again (on this process:
    only it reads ``reuse``).
    """
    from llmc_format.outfiles import check_output_file, check_outside_source

    check_outside_source(Path(dst), source.path)  # before reading anything
    check_output_file(Path(dst))
    policy = policy or Policy()
    qp_overrides = qp_overrides or {}
    metadata: dict[str, Any] = {
        "tool": f"llmc-format {__version__}",
        "source": source.describe(),
        "policy": {"codec": policy.codec, "qp": policy.qp, "bits": policy.bits},
        "user": dict(user_metadata or {}),
    }
    if created is not None:
        metadata["created"] = created
    if policy.codec_class.takes_samples:
        # provenance for archivists (docs/archival.md): each video stage config records
        # its encoder and FFmpeg; this records the decoder that produced the frame hashes
        # (asked of the codec class, not its name, so a plugin codec gets it too)
        from llmc_format.codecs.video.decode import decoder_versions

        metadata["decoder"] = decoder_versions()
    metadata.update(extra_metadata or {})
    rd_records = rd_records or {}
    reuse_names = reuse_names or set()
    items = list(source.tensors())
    attachments = list(source.attachments())
    # names the writer would refuse, refused before anything is written (not after the
    # blobs of every tensor before them)
    check_names([name for name, _ in items] + list(source.aliases()), [a for a, _ in attachments])
    tied = _tied_record(source.aliases(), attachments, [name for name, _ in items])
    if tied is not None:
        metadata["tied"] = tied
    specs = {name: entry.spec for name, entry in items}
    total = sum(s.numel for s in specs.values())
    done = 0

    own = executor is None
    ex = LocalExecutor(jobs or default_jobs()) if executor is None else executor
    encoding = with_encoder_threads(policy, ex.workers, remote=ex.remote)

    def jobs_in_order(todo: list[tuple[str, SourceTensor]]
                      ) -> Iterator[EncodeJob | Ready[PackedTensor]]:
        # drawn lazily by the executor, at most its window ahead of the writer
        for name, entry in todo:
            if reuse is not None and name in reuse_names:
                yield Ready(copy_packed(reuse, name))
                continue
            pipe = encoding.pipeline(name, entry.dtype, entry.shape, qp_overrides.get(name))
            native = native_pipeline(entry, pipe)
            load, spec = entry, None
            if native is not None and entry.native is not None:  # the source's own encoding
                pipe, load, spec = native, entry.native.load, entry.spec
            # a remote worker cannot call the source (open files, memory maps): ship the data
            nbytes = specs[name].nbytes
            # an RD allocation's QPs are overrides; only a user's QP may be raised
            facts = {"nbytes": nbytes, "native_spec": spec,
                     "coarser_on_failure": name not in qp_overrides}
            yield EncodeJob(name, pipe, array=np.array(load()) if spec else load(), **facts) \
                if ex.remote else EncodeJob(name, pipe, load=load, **facts)

    fingerprint = pack_fingerprint(
        metadata, policy, alignment, items, source.aliases(), qp_overrides=qp_overrides,
        rd_records=rd_records, reuse_names=sorted(reuse_names), record_timings=record_timings,
        reuse=None if reuse is None else reuse.footer.index_checksum)
    journal_opts: dict[str, Any] = {} if journal_interval is None else {
        "journal_interval": journal_interval}
    try:
        with Writer(dst, alignment=alignment, metadata=metadata, journal=fingerprint,
                    resume=resume, new=new, **journal_opts) as writer:
            done = _check_resumed(writer.resumed, items, progress, total)
            todo = items[len(writer.resumed):]
            # closing: an error while writing stops the executor's work at once
            # a window of many tensors, bounded in bytes: tiny norms and biases go on
            # encoding while a large matrix holds the head of the line
            results_iter = ex.map_ordered(
                run_job, jobs_in_order(todo), ahead_window(ex.workers), cost=_job_bytes,
                budget=ex.workers * max((s.nbytes for s in specs.values()), default=1))
            if progress and todo:  # the step starts now, not when its first tensor is done
                progress("start", "", done, total)
            with contextlib.closing(results_iter) as results:
                for packed in results:
                    name = packed.name
                    if not record_timings and packed.rd:
                        packed.rd = {k: v for k, v in packed.rd.items() if k not in TIMING_KEYS}
                    if name in rd_records:
                        packed.rd = {**(packed.rd or {}), **rd_records[name]}
                    write_packed(writer, packed)
                    writer.commit()  # resumable from here (at most every journal interval)
                    done += packed.spec.numel
                    if progress:
                        progress("tensor", name, done, total)
            for alias, target in source.aliases().items():
                t = specs.get(target)
                if t is None:
                    raise SourceError(f"alias {alias!r} points at {target!r}, which the source lacks")
                writer.add_tensor(TensorEntry(alias, t.dtype, t.shape, alias_of=target))
            for rel, data in attachments:
                writer.add_attachment(rel, data)
    finally:
        if own:
            ex.close()
    return Path(dst)
