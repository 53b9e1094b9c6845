"""Run a tensor through its codec pipeline, and back.

Encoding: each array→array stage transforms the array and may emit side blobs; the final
array→bytes stage emits the payload blobs. Every blob is tagged with the index of the
stage that owns it. Decoding resolves the spec of every stage's input from the tensor's
dtype/shape and the stored configs alone, then runs the stages backwards, each stage
fetching only the blobs it needs for the requested rows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from llmc_format.codecs.base import ArrayArrayCodec, ArrayBytesCodec, ArraySpec, Codec, Rows
from llmc_format.codecs.registry import get_codec, get_codec_class
from llmc_format.errors import CodecError


def is_lossless(configs: Sequence[dict[str, Any]]) -> bool:
    """Whether a stored pipeline reproduces its source tensor exactly: every stage's codec
    says it is ``lossless``. A codec not installed here counts as not (nothing to promise)."""
    if not configs:
        return False
    for config in configs:
        try:
            if not get_codec_class(config.get("id") if isinstance(config, dict) else None).lossless:
                return False
        except CodecError:
            return False
    return True


def _final_class(configs: Sequence[dict[str, Any]]) -> type[ArrayBytesCodec] | None:
    """The codec class of a stored pipeline's last stage; None if not installed here."""
    last = configs[-1] if configs else None
    try:
        cls = get_codec_class(last.get("id") if isinstance(last, dict) else None)
    except CodecError:
        return None
    return cls if issubclass(cls, ArrayBytesCodec) else None


def kept_encoding(configs: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The source file's own encoding a stored pipeline keeps in its final stage, as the
    config storing it again (``ArrayBytesCodec.kept_encoding``); None: it stores values."""
    cls = _final_class(configs)
    return cls.kept_encoding(configs[-1]) if cls is not None else None


def digest_portable(configs: Sequence[dict[str, Any]], values: np.ndarray) -> bool:
    """Whether a writer records ``digest.decoded`` of the whole decoded tensor ``values``
    (FORMAT.md §5.6): its final stage says every conforming decoder reproduces them
    (``ArrayBytesCodec.digest_portable``). The array stages before it keep portability:
    their binary32 operations meet at most one NaN operand."""
    cls = _final_class(configs)
    return cls is None or cls.digest_portable(configs[-1], values)


def stage_label(config: dict[str, Any]) -> str:
    """A stage's name for people (``inspect``): the codec's ``label`` (``ggml:Q4_1``), or
    the stored id when the codec is not installed here."""
    codec_id = config.get("id") if isinstance(config, dict) else None
    try:
        return get_codec_class(codec_id).label(config)
    except CodecError:
        return str(codec_id)


@dataclass
class EncodedTensor:
    blobs: list[tuple[int, bytes]]  # (stage, bytes)
    pipeline: list[dict[str, Any]]  # stored configs, one per stage
    info: list[dict[str, Any]] = field(default_factory=list)  # per stage
    #: the final stage's decoded output, if its encoder produced it (``Encoded``)
    reconstruction: np.ndarray | None = None


def build(configs: Sequence[dict[str, Any]], where: str, *, stored: bool = False) -> list[Codec]:
    """Instantiate and type-check a pipeline: array stages, then one bytes stage.

    ``stored``: the configs come from a file, so each must also be complete and closed
    (``Codec.check_stored_config``). Stages are checked in order, each one's id before its
    config (FORMAT.md §7), so every reader reports the same first error.
    """
    if not configs:
        raise CodecError(f"{where}: empty codec pipeline")
    stages = []
    for c in configs:
        if stored and isinstance(c, dict) and "id" in c:
            get_codec_class(c["id"], where).check_stored_config(c, where)
        stages.append(get_codec(c, where))
    for s in stages[:-1]:
        if not isinstance(s, ArrayArrayCodec):
            raise CodecError(f"{where}: codec {s.codec_id!r} cannot precede another stage")
    if not isinstance(stages[-1], ArrayBytesCodec):
        raise CodecError(f"{where}: pipeline must end with an array-to-bytes codec, "
                         f"not {stages[-1].codec_id!r}")
    return stages


def encode_tensor(array: np.ndarray, spec: ArraySpec, configs: Sequence[dict[str, Any]]) -> EncodedTensor:
    spec.check(array, what="source")
    stages = build(configs, f"tensor {spec.name!r}")
    out = EncodedTensor([], [], [])
    for i, stage in enumerate(stages):
        enc = stage.encode(array, spec)
        out.blobs.extend((i, b) for b in enc.blobs)
        out.pipeline.append(enc.config)
        out.info.append(enc.info)
        out.reconstruction = enc.reconstruction
        if isinstance(stage, ArrayArrayCodec):
            if enc.array is None:
                raise CodecError(f"tensor {spec.name!r}: stage {stage.codec_id!r} returned no array")
            spec = stage.resolve(spec)
            array = spec.check(enc.array, what=f"{stage.codec_id} output")
    return out


def final_stage(configs: Sequence[dict[str, Any]], spec: ArraySpec) -> tuple[Codec, ArraySpec]:
    """The pipeline's array-to-bytes stage and the spec of its input (from configs alone)."""
    stages = build(configs, f"tensor {spec.name!r}")
    for s in stages[:-1]:
        spec = s.resolve(spec)  # type: ignore[attr-defined]
    return stages[-1], spec


def encode_native(raw: np.ndarray, spec: ArraySpec,
                  configs: Sequence[dict[str, Any]]) -> EncodedTensor:
    """Encode a tensor from its source's own encoding (a GGUF tensor's ggml blocks).

    ``raw`` is what the final stage stores (``encode_blocks``); the array stages before it
    only describe how a reader gets from those values to ``spec``'s (e.g. ``rowperm``):
    they run at decode time, so here they only check that they fit ``spec``. The stored
    blocks are decoded back and compared with ``raw`` (lossless by construction, checked).
    """
    stages = build(configs, f"tensor {spec.name!r}")
    out = EncodedTensor([], [], [])
    for stage in stages[:-1]:
        assert isinstance(stage, ArrayArrayCodec)
        spec = stage.resolve(spec)
        out.pipeline.append(stage.get_config())
        out.info.append({})
    last = stages[-1]
    encode_blocks = getattr(last, "encode_blocks", None)
    if encode_blocks is None:
        raise CodecError(f"tensor {spec.name!r}: codec {last.codec_id!r} cannot store "
                         "source blocks")
    enc = encode_blocks(raw, spec)
    stored = get_codec(enc.config, f"tensor {spec.name!r}")  # as a reader will see it
    back = stored.decode_blocks(enc.blobs.__getitem__, len(enc.blobs), spec)  # type: ignore[attr-defined]
    if not np.array_equal(back.reshape(-1), np.asarray(raw).reshape(-1).view(np.uint8)):
        raise CodecError(f"tensor {spec.name!r}: stored blocks do not decode to the source's "
                         "(codec bug)")
    del back
    out.blobs.extend((len(stages) - 1, b) for b in enc.blobs)
    out.pipeline.append(enc.config)
    out.info.append(enc.info)
    return out


def decode_tensor(
    configs: Sequence[dict[str, Any]],
    spec: ArraySpec,
    blob_counts: Sequence[int],
    fetch: Callable[[int, int], bytes],
    rows: Rows | None = None,
    last_output: np.ndarray | None = None,
) -> np.ndarray:
    """Decode ``spec``'s tensor (or its rows) from stored configs.

    ``blob_counts[i]`` is how many blobs stage i owns; ``fetch(stage, i)`` returns the
    verified bytes of that stage's i-th blob. ``last_output``: the final stage's decoded
    array, already known (the whole tensor's), so only the array stages run.
    """
    where = f"tensor {spec.name!r}"
    stages = build(configs, where, stored=True)
    if rows is not None:
        n = spec.shape[0] if spec.shape else 1
        if not 0 <= rows[0] <= rows[1] <= n:
            raise CodecError(f"{where}: rows {rows[0]}:{rows[1]} out of range 0:{n}")
    specs = [spec]
    for s in stages[:-1]:
        specs.append(s.resolve(specs[-1]))  # type: ignore[attr-defined]
    # want[k]: the rows of specs[k] to produce; a stage may need more rows from below
    want: list[Rows | None] = [rows]
    for k, s in enumerate(stages[:-1]):
        assert isinstance(s, ArrayArrayCodec)
        want.append(s.input_rows(want[k], specs[k]))
    last = stages[-1]
    assert isinstance(last, ArrayBytesCodec)
    k = len(stages) - 1
    if last_output is None:
        array = last.decode(lambda i: fetch(k, i), blob_counts[k], specs[k], want[k])
    else:
        array = last_output if want[k] is None else last_output[want[k][0]:want[k][1]]
    specs[k].check(array, want[k])
    for k in range(len(stages) - 2, -1, -1):
        stage = stages[k]
        assert isinstance(stage, ArrayArrayCodec)
        array = stage.decode(array, lambda i, k=k: fetch(k, i), blob_counts[k], specs[k], want[k])
        specs[k].check(array, want[k])
    return array


def decode_encoded(enc: EncodedTensor, spec: ArraySpec) -> np.ndarray:
    """Decode an ``EncodedTensor`` still in memory (to measure what encoding lost).

    A final stage that decoded its own output while encoding (the video codecs, to hash
    each frame) left it in ``enc.reconstruction``: the bitstreams are not decoded again.
    """
    by_stage: dict[int, list[bytes]] = {}
    for stage, b in enc.blobs:
        by_stage.setdefault(stage, []).append(b)
    counts = [len(by_stage.get(i, [])) for i in range(len(enc.pipeline))]
    return decode_tensor(enc.pipeline, spec, counts, lambda s, i: by_stage[s][i],
                         last_output=enc.reconstruction)


def stage_bytes(enc: EncodedTensor, stage: int) -> int:
    return sum(len(b) for s, b in enc.blobs if s == stage)
