"""Fuzzing harness for llmc readers: seeds, mutators, the target, and a self-contained loop.

The property under test: **whatever bytes a file holds, the library either works or raises
an ``LlmcError``** — no other exception, no allocation the file does not justify, no file
written outside the output directory. Everything a reader exposes is exercised: opening,
``keys``, ``get_tensor``/``get_slice`` of every tensor, ``read_attachment``, ``inspect``,
``verify`` and ``unpack``.

Mutations come in two layers:

* **structure-aware** (``ArchiveModel``): the archive is parsed into header, decoded
  msgpack index and blob payloads (attached to their index entries), one or more
  mutations are applied to index *values* (huge shapes, offsets, counts, wrong types,
  other codec configs, hostile names...) or to blob *payloads* (flips, truncation,
  splicing, a frame swapped with one of another tensor or resolution), then the file is
  laid out afresh with valid tiling and valid checksums, so the mutation gets past the
  checksum layer into the validators and the decoders;
* **raw** bytes (bit flips, byte sets, truncation, insertion, deletion, splicing with
  another seed), which mostly exercise the checksum and structure checks.

Two engines drive them: ``fuzz_loop`` (pure Python, deterministic for a seed; new
*outcomes* — error class plus message shape — grow the corpus) used by the CI test, and
libFuzzer through atheris (``fuzz/fuzz_llmc.py``), which adds coverage feedback.

Imported by path (``sys.path`` gets ``fuzz/``), not installed: it is a test tool.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import re
import resource
import shutil
import struct
import tempfile
import time
import traceback
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import numpy as np

import llmc_format
from llmc_format.container import layout
from llmc_format.errors import EncoderMissingError, LlmcError

ROOT = Path(__file__).resolve().parent.parent
VECTORS = ROOT / "spec" / "vectors"

#: an input may make the library allocate this much, plus MEMORY_FACTOR x its size
MEMORY_SLACK = 64 << 20
MEMORY_FACTOR = 10
#: an input taking longer than this is reported as slow (a denial of service)
SLOW_SECONDS = 10.0


# =========================================================================== seeds


def _seed_source(tensors: dict[str, np.ndarray], attachments: dict[str, bytes],
                 aliases: dict[str, str]) -> Any:
    """A MemorySource that also has attachments and tied names (what a HF dir gives)."""
    from llmc_format.io.memory import MemorySource

    class Source(MemorySource):
        def attachments(self) -> Iterator[tuple[str, bytes]]:
            return iter(sorted(attachments.items()))

        def aliases(self) -> dict[str, str]:
            return dict(aliases)

    return Source(tensors)


def _exact_tensors(rng: np.random.Generator) -> dict[str, np.ndarray]:
    import ml_dtypes

    w = (rng.standard_normal((8, 16)) * 0.02).astype(np.float32)
    return {
        "w.f32": w,
        "w.bf16": w[:, :8].astype(ml_dtypes.bfloat16),
        "w.f16": w[:4, :4].astype(np.float16),
        "w.f64": w[:2, :3].astype(np.float64),
        "ids.i64": np.arange(-2, 3, dtype=np.int64),
        "mask.bool": np.array([[True, False, True], [False, True, False]]),
        "q.u8": rng.integers(0, 256, size=(7,), dtype=np.uint8),
        "q.i8": rng.integers(-128, 128, size=(2, 2, 2), dtype=np.int8),
        "f8": rng.standard_normal(4).astype(ml_dtypes.float8_e4m3fn),
        "scalar": np.array(3.25, dtype=np.float64),
        "empty": np.zeros((0, 4), dtype=np.float32),
    }


def build_seeds(out_dir: str | os.PathLike[str], *, video: bool = True,
                codecs: tuple[str, ...] = ("vvc", "hevc", "ffv1", "av1")) -> list[Path]:
    """Write small real archives into ``out_dir`` (reused if already there); return them.

    exact tensors of every dtype family plus attachments and an alias; a multi-blob exact
    tensor; a metadata-updated file (superseded index chain); and, when ``video``, one
    small lossy tensor per video codec whose encoder is available (two frames each).
    """
    from llmc_format.container.writer import Writer, append_metadata_update
    from llmc_format.pipeline.pack import encode_one, pack_source, write_packed
    from llmc_format.pipeline.policy import Policy

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(20261124)
    made: list[Path] = []

    p = out / "exact_dtypes.llmc"
    if not p.exists():
        tensors = _exact_tensors(rng)
        atts = {"config.json": b'{"hidden_size": 16, "layers": 1}' * 8,
                "tokenizer.model": rng.bytes(40), "sub/empty.txt": b""}
        pack_source(_seed_source(tensors, atts, {"tied.f32": "w.f32"}), p, jobs=1)
    made.append(p)

    p = out / "exact_chunks.llmc"
    if not p.exists():
        with Writer(p, alignment=8, metadata={"tool": "fuzz seed"}) as w:
            a = (rng.standard_normal((32, 24)) * 0.1).astype(np.float32)
            write_packed(w, encode_one("chunked", a, [{"id": "exact", "chunk_bytes": 400}]))
            b = rng.integers(0, 2**16, size=(300,), dtype=np.uint16)
            write_packed(w, encode_one("long", b, [{"id": "exact", "chunk_bytes": 128}]))
    made.append(p)

    p = out / "updated.llmc"
    if not p.exists():
        llmc_format.save_file({"x": np.arange(12, dtype=np.int32).reshape(3, 4)}, p, jobs=1)
        append_metadata_update(p, metadata={"user": {"note": "first update"}})
        append_metadata_update(p, metadata={"user": {"note": "second update"}})
    made.append(p)

    if video:
        for codec in codecs:
            p = out / f"lossy_{codec}.llmc"
            if not p.exists():
                w = (rng.standard_normal((64, 64)) * 0.05).astype(np.float32)
                bias = rng.standard_normal(64).astype(np.float32)
                policy = Policy(codec=codec, min_lossy_numel=1,
                                video={"target_pixels": 2048}, affine={})
                try:
                    pack_source(_seed_source({"layer.weight": w, "layer.bias": bias}, {}, {}),
                                p, policy=policy, jobs=1)
                except EncoderMissingError:
                    continue
            made.append(p)
    if VECTORS.is_dir():
        made.extend(sorted(VECTORS.glob("*.llmc")))
    return made


# =========================================================================== model


INTERESTING_INTS = [
    0, 1, 2, 3, 7, 8, 15, 16, 17, 63, 64, 65, 127, 128, 255, 256, 1023, 1024, 4096, 16383,
    16384, 16385, 65535, 65536, 2**20, 2**30, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**40,
    2**53, 2**62, 2**63 - 1, 2**63, 2**64 - 1, -1, -2, -(2**31), -(2**63),
]
INTERESTING_STRS = [
    "", "x", "../evil", "/abs/path", "a/../../b", "a//b", "./a", "C:\\x", "a\x00b",
    "n" * 1025, "é" * 600, "exact", "affine", "vvc", "hevc", "av1", "ffv1", "nope",
    "float32", "bfloat16", "float16", "float64", "uint16", "bool", "int64", "uint8",
    "float8_e4m3fn", "float8_e5m2", "complex64", "raw", "zstd", "lzma", "yuv420p10le",
    "gray10le", "gray", "gray16le", "libvvenc", "libx265", "libsvtav1", "libaom-av1",
    "row", "group", "tensor", "auto", "mse", "none", "faster",
]
#: names that collide with unpack's outputs or with each other, or attack a terminal
COLLIDING_NAMES = [
    "model.safetensors", "__metadata__", "config.json", "model.safetensors.index.json",
    "pytorch_model.bin", "a", "a/b", "sub", "x" * 300 + "/y", "x[/]", "[bold]b",
    "\x1b[2Jclear", "line\nbreak", "rtl\u202eexe.txt", "CON", ".", "..",
]
INTERESTING_STRS += COLLIDING_NAMES
#: RD records a careful attacker writes: NaN/inf samples, wrong types, duplicate QPs
HOSTILE_RD: list[Any] = [
    {"samples": [[22, math.nan, 1e-6], [29, 2.0, 2e-6]], "signal_energy": 1.0, "mse": 0.0},
    {"samples": [[22, 1.0, math.inf]], "signal_energy": math.nan},
    {"samples": [[22, 1.0, 1e-6], [22, 0.5, 2e-6]], "signal_energy": 1.0, "mse": 1e-6},
    {"samples": [[22.5, 1.0, 1e-6]], "qp": "thirty"},
    {"samples": [[30, 1.0]], "qp": 2**64 - 1},
    {"samples": "x", "snr_db": math.nan, "bpw": -1.0},
    {"samples": [[-5, 1.0, 1e-6], [400, 0.1, 1.0]], "rate_scale": 0.0, "mse": -1.0},
    {"qp": True, "chosen_qp": None, "predicted_bpw": math.inf},
]
HOSTILE_RD_SUMMARY: list[Any] = [
    {"target": "bpw"}, {"target": {"kind": 3, "value": "x"}}, [1, 2],
    {"target": {"kind": "bpw", "value": math.nan}, "lambda": "x", "passes": -1},
]
_MSGPACK_INT = (-(2**63), 2**64 - 1)


def _clamp(v: int) -> int:
    return max(_MSGPACK_INT[0], min(_MSGPACK_INT[1], v))


class Unparseable(Exception):
    """The bytes are not structured enough for structure-aware mutation."""


@dataclass
class ArchiveModel:
    """An archive as header + index object + payloads attached to their blob entries.

    ``payload`` maps ``id(blob_dict)`` to its bytes; ``keep`` holds ids of dicts whose
    values a mutation set on purpose (the layout step does not overwrite them).
    """

    header: bytes
    alignment: int
    obj: Any
    payload: dict[int, bytes] = field(default_factory=dict)
    history: bytes = b""
    old_data_end: int = 0
    keep: set[int] = field(default_factory=set)
    footer_lie: tuple[int, int, int] | None = None

    # ----------------------------------------------------------------- parse
    @classmethod
    def parse(cls, data: bytes) -> ArchiveModel:
        if len(data) < 64 + 48 or data[:8] != layout.MAGIC:
            raise Unparseable("no header")
        (align,) = struct.unpack_from("<I", data, 32)
        if not layout.valid_alignment(align):
            align = layout.DEFAULT_ALIGNMENT
        off, length = struct.unpack_from("<QQ", data, len(data) - 48)
        if off + length > len(data) or off < 64:
            raise Unparseable("footer")
        try:
            obj = msgpack.unpackb(data[off:off + length], raw=False, strict_map_key=False)
        except Exception as exc:
            raise Unparseable(f"index: {exc}") from None
        m = cls(data[:64], align, obj)
        if not isinstance(obj, dict):
            return m
        for blob in m.blob_dicts():
            o, n = blob.get("offset"), blob.get("length")
            if isinstance(o, int) and isinstance(n, int) and o >= 0 and 0 < n <= len(data) - o:
                m.payload[id(blob)] = data[o:o + n]
        de = obj.get("data_end")
        if isinstance(de, int) and obj.get("previous") and 0 <= de <= off:
            m.history, m.old_data_end = data[de:off], de
        return m

    def tensor_dicts(self) -> list[dict[str, Any]]:
        ts = self.obj.get("tensors") if isinstance(self.obj, dict) else None
        return [t for t in ts if isinstance(t, dict)] if isinstance(ts, list) else []

    def attachment_dicts(self) -> list[dict[str, Any]]:
        a = self.obj.get("attachments") if isinstance(self.obj, dict) else None
        return [x for x in a if isinstance(x, dict)] if isinstance(a, list) else []

    def blob_dicts(self) -> list[dict[str, Any]]:
        out = []
        for t in self.tensor_dicts():
            if isinstance(t.get("blobs"), list):
                out += [b for b in t["blobs"] if isinstance(b, dict)]
        for a in self.attachment_dicts():
            if isinstance(a.get("blob"), dict):
                out.append(a["blob"])
        return out

    # ----------------------------------------------------------------- serialize
    def serialize(self) -> bytes:
        """Lay the blobs out afresh (aligned, tiled) and write index and footer with
        valid checksums, except where a mutation asked to keep a lie."""
        a = self.alignment
        out = bytearray(self.header)
        out += bytes(layout.align_up(len(out), a) - len(out))
        for blob in self.blob_dicts():
            data = self.payload.get(id(blob))
            if data is None:
                continue
            if id(blob) not in self.keep:
                blob.update(offset=len(out), length=len(data), checksum=layout.checksum(data))
            out += data
            out += bytes(layout.align_up(len(out), a) - len(out))
        if isinstance(self.obj, dict) and id(self.obj) not in self.keep:
            if "data_end" in self.obj or not self.history:
                self.obj["data_end"] = len(out)
            prev = self.obj.get("previous")
            if self.history and isinstance(prev, dict) and isinstance(prev.get("index_offset"), int):
                prev["index_offset"] = _clamp(prev["index_offset"] + len(out) - self.old_data_end)
        out += self.history
        out += bytes(layout.align_up(len(out), a) - len(out))
        raw = msgpack.packb(self.obj, use_bin_type=True)
        footer = layout.Footer(len(out), len(raw), layout.checksum(raw))
        if self.footer_lie is not None:
            footer = layout.Footer(*self.footer_lie)
        out += raw
        out += footer.pack()
        return bytes(out)


# =========================================================================== mutators


def _nodes(obj: Any, depth: int = 0) -> list[tuple[Any, Any]]:
    """Every (container, key) in a decoded index, to pick a value to mutate."""
    out: list[tuple[Any, Any]] = []
    if depth > 12:
        return out
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.append((obj, k))
            out += _nodes(v, depth + 1)
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out.append((obj, i))
            out += _nodes(v, depth + 1)
    return out


def _random_value(rng: random.Random, like: Any = None) -> Any:
    r = rng.random()
    if isinstance(like, bool) or r < 0.05:
        return rng.choice([True, False, None])
    if isinstance(like, int) and r < 0.7:
        choice = rng.random()
        if choice < 0.4:
            return rng.choice(INTERESTING_INTS)
        if choice < 0.7:
            return _clamp(like + rng.choice([-1, 1, -8, 8, -64, 64, 4096]))
        if choice < 0.85:
            return _clamp(like * rng.choice([2, 16, 1 << 20]) if like else 1 << rng.randrange(64))
        return rng.randrange(-(2**63), 2**64)
    if isinstance(like, str) and r < 0.7:
        return rng.choice(INTERESTING_STRS) if rng.random() < 0.8 else like + "x"
    if isinstance(like, float) and r < 0.7:
        return rng.choice([0.0, -0.0, math.inf, -math.inf, math.nan, 1e308, -1.0, like * 2])
    if isinstance(like, bytes) and r < 0.7:
        return rng.randbytes(rng.randrange(0, 40))
    return rng.choice([
        0, -1, 2**64 - 1, 2**63, 1.5, math.nan, "", "x", b"", b"\x00" * 3, [], [0], [2**40],
        {}, {"id": "exact"}, {"offset": 0, "length": 1, "checksum": 0}, None, True,
    ])


def mutate_value(m: ArchiveModel, rng: random.Random) -> str:
    """Change, delete or retype one value anywhere in the index."""
    nodes = _nodes(m.obj)
    if not nodes:
        m.obj = _random_value(rng, m.obj)
        return "replace index"
    parent, key = rng.choice(nodes)
    old = parent[key]
    r = rng.random()
    if isinstance(parent, dict) and r < 0.12:
        del parent[key]
        what = f"delete {key!r}"
    elif isinstance(parent, list) and r < 0.12:
        del parent[key]
        what = "delete list item"
    elif isinstance(parent, list) and r < 0.2:
        parent.insert(key, _copy(old))
        what = "duplicate list item"
    elif isinstance(old, list) and r < 0.3 and old:
        rng.shuffle(old)
        what = "shuffle list"
    elif isinstance(old, dict) and r < 0.3:
        old[rng.choice(["zz_unknown", "id", "offset", "shape", "layout", "frames"])] = (
            _random_value(rng))
        what = "add key"
    else:
        parent[key] = _random_value(rng, old)
        what = f"set {key!r}"
    m.keep.add(id(parent))  # the layout step must not overwrite the lie
    return what


def _copy(v: Any) -> Any:
    return msgpack.unpackb(msgpack.packb(v, use_bin_type=True), raw=False, strict_map_key=False)


def mutate_semantic(m: ArchiveModel, rng: random.Random) -> str:
    """A lie a careful attacker would tell: shapes, dtypes, swapped pipelines, codec
    configs, hostile names, forged counts. Checksums stay valid."""
    ts, atts = m.tensor_dicts(), m.attachment_dicts()
    if not ts:
        return mutate_value(m, rng)
    t = rng.choice(ts)
    pipe = t.get("pipeline") if isinstance(t.get("pipeline"), list) else []
    configs = [c for c in pipe if isinstance(c, dict)]
    choice = rng.randrange(18)
    if choice == 0:
        t["shape"] = rng.choice([[2**20, 2**20], [2**31], [2**30, 8], [0], [], [1] * 17,
                                 [65, 64], [64, 65], [16384 * 8, 16384], [2**40, 2**21],
                                 [3, 0, 2**62], [1, 2**62]])
        return "shape lie"
    if choice == 1 and isinstance(t.get("shape"), list) and t["shape"]:
        i = rng.randrange(len(t["shape"]))
        t["shape"][i] = _random_value(rng, t["shape"][i])
        return "dimension lie"
    if choice == 2:
        t["dtype"] = rng.choice(INTERESTING_STRS[18:30])
        return "dtype lie"
    if choice == 3 and len(ts) > 1:
        other = rng.choice(ts)
        key = rng.choice(["pipeline", "blobs", "shape", "dtype", "digest"])
        if key in t and key in other:
            t[key], other[key] = other[key], t[key]  # payloads stay attached to blob dicts
            return f"swap {key}"
    if choice == 4 and configs:
        c = rng.choice(configs)
        key = rng.choice([k for k in c if k != "id"] or ["id"])
        c[key] = _random_value(rng, c.get(key))
        return f"codec config {c.get('id')}.{key}"
    if choice == 5 and configs:
        c = rng.choice(configs)
        frames = c.get("frames")
        if isinstance(frames, dict) and frames:
            k = rng.choice(list(frames))
            frames[k] = _random_value(rng, frames[k])
            return f"frame geometry {k}"
        if "chunk_elems" in c:
            c["chunk_elems"] = rng.choice([0, 1, 2**30, 2**30 + 1, -1,
                                           _random_value(rng, c["chunk_elems"])])
            return "chunk_elems"
    if choice == 6 and configs:
        c = rng.choice(configs)
        c["id"] = rng.choice(["exact", "affine", "vvc", "hevc", "av1", "ffv1", "nope", 7])
        return "codec id"
    if choice == 7:
        blobs = t.get("blobs")
        if isinstance(blobs, list) and blobs:
            i = rng.randrange(len(blobs))
            op = rng.randrange(3)
            if op == 0:
                blobs.pop(i)
            elif op == 1 and isinstance(blobs[i], dict):
                dup = dict(blobs[i])
                m.payload[id(dup)] = m.payload.get(id(blobs[i]), b"\x00")
                blobs.insert(i, dup)
            elif isinstance(blobs[i], dict):
                blobs[i]["stage"] = rng.choice([0, 1, 2, 7, -1])
                m.keep.discard(id(blobs[i]))
            return "blob list"
    if choice == 8 and atts:
        rng.choice(atts)["name"] = rng.choice(["../evil", "/abs/path", "a/../../b", "sub/../..",
                                               "x\\..\\y", "ok.json", "", "a//b", "."])
        return "attachment name"
    if choice == 9 and atts:
        a = rng.choice(atts)
        key = rng.choice(["size", "encoding"])
        a[key] = (rng.choice([0, 1, 2**31, 2**40, 2**64 - 1]) if key == "size"
                  else rng.choice(["raw", "zstd", "lzma"]))
        return f"attachment {key}"
    if choice == 10:
        t["alias_of"] = rng.choice([x.get("name") for x in ts] + ["missing", t.get("name")])
        return "alias"
    if choice == 11:
        t["name"] = rng.choice([x.get("name") for x in ts] + INTERESTING_STRS[:10])
        return "tensor name"
    if choice == 12:
        d = t.setdefault("digest", {})
        if isinstance(d, dict):
            d[rng.choice(["source", "decoded"])] = rng.randrange(2**64)
            return "digest lie"
    if choice == 13 and isinstance(m.obj, dict):
        m.obj["previous"] = {"index_offset": rng.choice([0, 64, 2**40]),
                             "index_length": rng.choice([0, 1, 2**30]), "index_checksum": 0}
        return "previous lie"
    if choice == 14:  # alias fan-out: many names for one stored tensor
        stored = [x for x in ts if "alias_of" not in x and isinstance(x.get("name"), str)]
        if stored:
            target = rng.choice(stored)
            k = rng.choice([2, 50, 500, 2000])
            m.obj["tensors"] += [{"name": f"{target['name']}.alias{i}", "dtype": target.get("dtype"),
                                  "shape": target.get("shape"), "alias_of": target["name"]}
                                 for i in range(k)]
            return f"alias fan-out x{k}"
    if choice == 15:  # names colliding with outputs / each other, hostile to terminals
        names = COLLIDING_NAMES
        if atts and rng.random() < 0.5:
            for a in rng.sample(atts, min(len(atts), 2)):
                a["name"] = rng.choice(names)
            return "attachment name collision"
        t["name"] = rng.choice(names)
        return "tensor name collision"
    if choice == 16:  # RD records and the RD summary
        if rng.random() < 0.7:
            t["rd"] = _copy(rng.choice(HOSTILE_RD))
            return "rd record lie"
        if isinstance(m.obj.get("metadata"), dict):
            m.obj["metadata"]["rd"] = _copy(rng.choice(HOSTILE_RD_SUMMARY))
            return "rd summary lie"
    if choice == 17 and isinstance(m.obj.get("metadata"), dict):  # object-count/depth bombs
        if rng.random() < 0.5:
            deep: Any = []
            for _ in range(rng.choice([20, 40, 200])):
                deep = [deep]
            m.obj["metadata"]["deep"] = deep
            return "deep metadata"
        m.obj["metadata"]["maps"] = [{}] * rng.choice([1000, 100_000, 300_000])
        return "many empty maps"
    return mutate_value(m, rng)


def mutate_bytes(data: bytes, rng: random.Random, donors: list[bytes] = ()) -> bytes:
    """One raw mutation: flips, byte sets, truncation, insertion, deletion, splicing."""
    b = bytearray(data)
    op = rng.randrange(8)
    if not b:
        return rng.randbytes(rng.randrange(1, 64))
    if op == 0:
        for _ in range(rng.choice([1, 1, 1, 2, 8])):
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
    elif op == 1:
        i = rng.randrange(len(b))
        b[i] = rng.choice([0, 1, 0x7F, 0x80, 0xFF, rng.randrange(256)])
    elif op == 2:
        del b[rng.randrange(len(b)):]
    elif op == 3:
        i = rng.randrange(len(b) + 1)
        b[i:i] = rng.choice([b"\x00", b"\xff" * 4, rng.randbytes(rng.randrange(1, 32)), b[:16]])
    elif op == 4:
        i = rng.randrange(len(b))
        del b[i:i + rng.randrange(1, 64)]
    elif op == 5 and donors:
        d = rng.choice(donors)
        i, j = rng.randrange(len(b)), rng.randrange(len(d))
        b[i:i + rng.randrange(1, 256)] = d[j:j + rng.randrange(1, 256)]
    elif op == 6:
        i = rng.randrange(len(b))
        n = rng.choice([2, 4, 8])
        b[i:i + n] = rng.choice([b"\xff" * n, b"\x00" * n, b"\x7f" + b"\xff" * (n - 1)])
    else:
        i = rng.randrange(len(b))
        b[i:i] = b[i:i + rng.randrange(1, 128)]
    return bytes(b)


def mutate_payload(m: ArchiveModel, rng: random.Random, donors: list[bytes]) -> str:
    """Change a blob's bytes (checksums are recomputed): the decoders see the damage."""
    blobs = [b for b in m.blob_dicts() if id(b) in m.payload]
    if not blobs:
        return mutate_value(m, rng)
    blob = rng.choice(blobs)
    r = rng.random()
    if r < 0.25:
        other = [m.payload[id(b)] for b in blobs if b is not blob]
        m.payload[id(blob)] = rng.choice(other + donors[:1]) if other else rng.randbytes(8)
        return "payload swapped"
    if r < 0.35 and donors:
        m.payload[id(blob)] = rng.choice(donors)
        return "payload from another archive"
    new = m.payload[id(blob)]
    for _ in range(rng.choice([1, 1, 2, 4])):
        new = mutate_bytes(new, rng, donors)
    m.payload[id(blob)] = new or b"\x00"
    return "payload bytes"


class Mutator:
    """Structure-aware and raw mutations of archives, seeded (reproducible)."""

    def __init__(self, seeds: list[bytes]) -> None:
        self.seeds = seeds
        self.donor_blobs: list[bytes] = []
        for s in seeds:
            with contextlib.suppress(Unparseable):
                m = ArchiveModel.parse(s)
                self.donor_blobs += list(m.payload.values())

    def mutate(self, data: bytes, rng: random.Random) -> tuple[bytes, str]:
        """One mutated input and a short description of what was done."""
        r = rng.random()
        if r < 0.75:
            try:
                m = ArchiveModel.parse(data)
            except Unparseable:
                m = None
            if m is not None:
                whats = []
                for _ in range(rng.choice([1, 1, 1, 2, 3])):
                    op = rng.random()
                    try:
                        if op < 0.4:
                            whats.append(mutate_semantic(m, rng))
                        elif op < 0.7:
                            whats.append(mutate_value(m, rng))
                        else:
                            whats.append(mutate_payload(m, rng, self.donor_blobs))
                    except (TypeError, ValueError, KeyError, IndexError, AttributeError):
                        whats.append("(mutation on an odd value skipped)")  # index already odd
                if rng.random() < 0.05:
                    m.alignment = rng.choice([8, 16, 64, 4096])
                    h = layout.Header.unpack(m.header) if _header_ok(m.header) else layout.Header()
                    m.header = layout.Header(h.major, h.minor, h.required_features,
                                             h.optional_features, m.alignment).pack()
                    whats.append("realign")
                try:
                    out = m.serialize()
                except (OverflowError, ValueError, TypeError) as exc:
                    return mutate_bytes(data, rng, self.seeds), f"raw (serialize: {exc})"
                if rng.random() < 0.1:
                    out = mutate_bytes(out, rng, self.seeds)
                    whats.append("raw")
                return out, "+".join(whats)
        return mutate_bytes(data, rng, self.seeds), "raw"


def _header_ok(h: bytes) -> bool:
    try:
        layout.Header.unpack(h)
    except LlmcError:
        return False
    return True


# =========================================================================== target


class Bug(Exception):
    """The library misbehaved on an input: an untyped exception, too much memory..."""


@dataclass
class Outcome:
    """What one input did: per step, None (worked) or the typed error's class name."""

    steps: dict[str, str | None] = field(default_factory=dict)
    opened: bool = False
    seconds: float = 0.0
    traced_peak: int = 0
    rss_growth: int = 0

    def signature(self) -> tuple[str, ...]:
        return tuple(f"{k}:{v}" for k, v in sorted(self.steps.items()))


def _message_shape(exc: BaseException) -> str:
    return re.sub(r"\d+", "N", f"{type(exc).__name__}: {exc}")[:70]


class Target:
    """Runs every reader entry point on one input file and classifies what happened."""

    def __init__(self, workdir: str | os.PathLike[str] | None = None, *, unpack: bool = True,
                 track_memory: bool = True, strict_reservations: bool = False,
                 cli_every: int = 10) -> None:
        self.strict_reservations = strict_reservations
        base = workdir or ("/dev/shm" if os.path.isdir("/dev/shm") else None)
        self.root = Path(tempfile.mkdtemp(prefix="llmc-fuzz-", dir=base))
        self.box = self.root / "box"  # unpack's parent: the only place anything may appear
        self.box.mkdir()
        self.path = self.box / "input.llmc"
        self.unpack = unpack
        #: run the CLI step on every n-th opened input (0: never): three CliRunner
        #: invocations cost more than all library steps together
        self.cli_every = cli_every
        self._opened = 0
        self.track_memory = track_memory
        self._rss_check = True
        if track_memory and not tracemalloc.is_tracing():
            tracemalloc.start()

    def warm_up(self, data: bytes) -> Outcome:
        """Run once without the memory check: the first run imports decoders (PyAV...)."""
        rss_check, self._rss_check = self._rss_check, False
        try:
            return self(data)
        finally:
            self._rss_check = rss_check

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    def __call__(self, data: bytes) -> Outcome:
        """Run all targets; raise ``Bug`` on an untyped exception or excessive memory."""
        self.path.write_bytes(data)
        out = Outcome()
        rss_before = _current_rss()
        max_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        if self.track_memory:
            tracemalloc.reset_peak()
        t0 = time.perf_counter()
        try:
            self._run(out)
        finally:
            out.seconds = time.perf_counter() - t0
        limit = MEMORY_SLACK + MEMORY_FACTOR * len(data)
        if self.track_memory:
            # address space reserved (numpy/bytes allocations), touched or not: reported,
            # a bug only with strict_reservations (np.empty of a declared size is lazy)
            out.traced_peak = tracemalloc.get_traced_memory()[1] - tracemalloc.get_traced_memory()[0]
            if self.strict_reservations and out.traced_peak > limit:
                raise Bug(f"memory: Python/numpy allocations peaked {out.traced_peak} bytes above "
                          f"the baseline for a {len(data)}-byte input (limit {limit})")
        max_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        if self._rss_check and max_after > max(max_before, rss_before + limit):
            out.rss_growth = max_after - rss_before
            raise Bug(f"memory: resident set grew {out.rss_growth} bytes for a "
                      f"{len(data)}-byte input (limit {limit})")
        if out.opened and self.cli_every:  # after the memory check: rich costs ~10 KB per
            self._opened += 1                  # table row (5,000 aliases: 50 MB)
            if self._opened % self.cli_every == 1 or self.cli_every == 1:
                self._cli(out)
        return out

    def _step(self, out: Outcome, name: str, fn: Callable[[], Any]) -> Any:
        try:
            result = fn()
        except LlmcError as exc:
            out.steps[name] = _message_shape(exc)
            return None
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:
            raise Bug(f"{name}: untyped {type(exc).__name__}: {exc}\n"
                      f"{traceback.format_exc()}") from exc
        out.steps.setdefault(name, None)
        return result

    def _run(self, out: Outcome) -> None:
        from llmc_format.pipeline.inspect import describe
        from llmc_format.pipeline.verify import verify

        f = self._step(out, "open", lambda: llmc_format.safe_open(self.path))
        if f is not None:
            out.opened = True
            with f:
                keys = self._step(out, "keys", f.keys) or []
                self._step(out, "metadata", f.metadata)
                decoded: dict[str, int] = {}  # stored tensor -> names of it decoded so far
                for k in keys:
                    self._step(out, "info", lambda k=k: f.info(k))
                    target = f._reader.resolve(k).name
                    decoded[target] = decoded.get(target, 0) + 1
                    if decoded[target] > 4:  # a fan-out's further aliases decode the same
                        continue             # blobs by the same path: 2,000 took 15 s
                    self._step(out, "get_tensor", lambda k=k: f.get_tensor(k))
                    self._step(out, "get_slice", lambda k=k: self._slices(f, k))
                for a in self._step(out, "attachments", f.attachments) or []:
                    self._step(out, "read_attachment", lambda a=a: f.read_attachment(a))
            self._step(out, "inspect", lambda: describe(self.path))
            self._step(out, "rd_plan", lambda: rd_plan(self.path))
        report = self._step(out, "verify", lambda: verify(self.path))
        if report is not None:
            self._step(out, "verify_json", report.to_dict)
        if out.opened and self.unpack:
            self._unpack(out)

    def _cli(self, out: Outcome) -> None:
        """``llmc inspect`` (table, ``--rd`` or ``--json``, in turn) as a user runs it: exit 0
        or 3 and one line, whatever names and records the file holds (markup, escapes, NaNs)."""
        from typer.testing import CliRunner

        from llmc_format.cli import app

        variants = ([], ["--rd"], ["--json"])  # one per call, in turn (each costs ~0.5 s)
        for args in (variants[self._opened // max(self.cli_every, 1) % len(variants)],):
            r = CliRunner().invoke(app, ["inspect", str(self.path), *args])
            text = r.output
            if r.exit_code not in (0, 3) or "internal error" in text or (
                    r.exception is not None and not isinstance(r.exception, SystemExit)):
                raise Bug(f"cli inspect {args}: exit {r.exit_code}: {text[-2000:]}"
                          f"{r.exception!r}")
            if "\x1b" in text:  # not a terminal: rich emits no styles, so it is a name's
                raise Bug(f"cli inspect {args}: a raw terminal escape reached the output")
            out.steps.setdefault(f"cli{''.join(args)}", None if r.exit_code == 0 else "exit 3")

    @staticmethod
    def _slices(f: Any, name: str) -> None:
        s = f.get_slice(name)
        n = len(s)
        s.get_shape()
        if n:
            s[0]
            s[n // 2:]
            s[-1:]
            s[1:n - 1]

    def _unpack(self, out: Outcome) -> None:
        from llmc_format.pipeline.unpack import unpack

        dest = self.box / "out"
        before = _listing(self.root)
        self._step(out, "unpack", lambda: unpack(self.path, dest))
        after = _listing(self.root)
        escaped = {p for p in after - before if not p.startswith("box/out")}
        shutil.rmtree(dest, ignore_errors=True)
        if escaped:
            raise Bug(f"unpack wrote outside its output directory: {sorted(escaped)}")


def rd_plan(path: Path) -> None:
    """What ``repack`` computes from the recorded RD data, without encoding: validate each
    record, build its curve, evaluate rate, distortion and SNR across the QP range."""
    from llmc_format.container.reader import Reader
    from llmc_format.rd.model import RDCurve
    from llmc_format.rd.records import check_rd, qp_range_of

    with Reader(path) as r:
        for e in r.index.tensors:
            lo, hi = qp_range_of(r.resolve(e.name).pipeline)
            rd = check_rd(e.rd, (lo, hi), e.name)
            if rd and "samples" in rd:
                curve = RDCurve.from_dict(rd, e.numel)
                for q in (lo, (lo + hi) // 2, hi):
                    curve.rate(q), curve.distortion(q), curve.snr_db(q)


_SPECIAL_PROBE = """
import sys
import llmc_format
from llmc_format.errors import InputError
from llmc_format.pipeline.inspect import describe
from llmc_format.pipeline.unpack import unpack
from llmc_format.pipeline.verify import verify
path, out = sys.argv[1], sys.argv[2]
for name, fn in (("safe_open", lambda: llmc_format.safe_open(path)),
                 ("inspect", lambda: describe(path)), ("unpack", lambda: unpack(path, out))):
    try:
        fn()
    except InputError:
        continue
    print(f"{name}: no InputError")
r = verify(path)
if r.ok or "not an llmc file" not in r.file_problems[0]:
    print(f"verify: {r.file_problems}")
"""


def check_special_files(workdir: str | os.PathLike[str], timeout: float = 60.0) -> dict[str, str]:
    """Every reader entry point on a FIFO, a directory, a socket and a device: each must
    be refused with ``InputError`` at once (a FIFO used to block ``open`` forever). Runs
    in a child process with a timeout, so a hang is a finding, not a stuck fuzzer.
    Returns kind -> "ok" or what went wrong."""
    import socket
    import subprocess
    import sys

    base = Path(workdir)
    base.mkdir(parents=True, exist_ok=True)
    fifo, sock_path, directory = base / "fifo.llmc", base / "sock.llmc", base / "dir.llmc"
    for p in (fifo, sock_path):
        p.unlink(missing_ok=True)
    os.mkfifo(fifo)
    directory.mkdir(exist_ok=True)
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(sock_path))
    results: dict[str, str] = {}
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    try:
        for kind, path in (("fifo", fifo), ("directory", directory), ("socket", sock_path),
                           ("device", Path(os.devnull))):
            try:
                done = subprocess.run([sys.executable, "-c", _SPECIAL_PROBE, str(path),
                                       str(base / "out")], capture_output=True, text=True,
                                      timeout=timeout, env=env)
            except subprocess.TimeoutExpired:
                results[kind] = f"hang (> {timeout:.0f} s)"
                continue
            problem = (done.stdout + (done.stderr if done.returncode else "")).strip()
            results[kind] = problem[-500:] if problem else "ok"
    finally:
        sock.close()
    return results


def _listing(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _current_rss() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# =========================================================================== loop


@dataclass
class FuzzStats:
    executions: int = 0
    seconds: float = 0.0
    crashes: list[tuple[str, str]] = field(default_factory=list)  # (file, message)
    outcomes: dict[str, int] = field(default_factory=dict)  # first failing step:class -> count
    opened: int = 0
    fully_valid: int = 0
    corpus_size: int = 0
    slowest: float = 0.0
    peak_traced: int = 0
    #: inputs that made the library reserve (not touch) more than the memory limit
    reservations: list[tuple[int, int, str]] = field(default_factory=list)  # bytes, size, what
    #: special files given as the archive (``check_special_files``): kind -> "ok" or problem
    special: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        top = sorted(self.outcomes.items(), key=lambda kv: -kv[1])[:12]
        lines = [
            f"executions {self.executions} in {self.seconds:.1f} s "
            f"({self.executions / max(self.seconds, 1e-9):.1f}/s), crashes {len(self.crashes)}, "
            f"opened {self.opened}, fully valid {self.fully_valid}, corpus {self.corpus_size}, "
            f"slowest input {self.slowest:.2f} s, peak traced {self.peak_traced / 2**20:.1f} MiB",
            f"inputs reserving more than the limit (virtual, untouched): {len(self.reservations)}",
            "special files as input: " + (", ".join(f"{k} {v}" for k, v in self.special.items())
                                          or "not checked"),
            "most frequent outcomes:",
        ]
        lines += [f"  reserved {b / 2**20:.0f} MiB for a {n}-byte input [{w}]"
                  for b, n, w in sorted(self.reservations, reverse=True)[:5]]
        lines += [f"  {n:6d}  {k}" for k, n in top]
        lines += [f"  CRASH {f}: {msg.splitlines()[0]}" for f, msg in self.crashes]
        lines += [f"  SPECIAL FILE {k}: {v}" for k, v in self.special.items() if v != "ok"]
        return "\n".join(lines)


def _first_failure(o: Outcome) -> str:
    for step, res in o.steps.items():
        if res is not None:
            return f"{step}: {res.split(':')[0]}"
    return "valid"


def fuzz_loop(seeds: list[bytes], *, seconds: float | None = None, max_execs: int | None = None,
              seed: int = 0, crash_dir: str | os.PathLike[str] | None = None,
              unpack: bool = True, track_memory: bool = True,
              log: Callable[[str], None] | None = None) -> FuzzStats:
    """Mutate ``seeds`` until the time or execution budget runs out; collect crashes.

    Inputs whose outcome signature (which step failed with which error shape) is new join
    the corpus, a cheap stand-in for coverage feedback. Crashing inputs are written to
    ``crash_dir`` as ``crash-<n>.llmc`` with the traceback beside them.
    """
    if seconds is None and max_execs is None:
        raise ValueError("give seconds or max_execs")
    rng = random.Random(seed)
    mutator = Mutator(seeds)
    corpus = list(seeds)
    seen: set[tuple[str, ...]] = set()
    stats = FuzzStats()
    target = Target(unpack=unpack, track_memory=track_memory)
    start = time.monotonic()
    try:
        stats.special = check_special_files(target.root / "special")
        for i, s in enumerate(seeds):  # seeds must be fine: they are real archives
            o = target.warm_up(s) if i == 0 else target(s)
            seen.add(o.signature())
        start = time.monotonic()  # the budget is for mutated inputs (imports are done)
        while True:
            stats.seconds = time.monotonic() - start
            if (seconds is not None and stats.seconds >= seconds) or (
                    max_execs is not None and stats.executions >= max_execs):
                break
            parent = rng.choice(corpus)
            data, what = mutator.mutate(parent, rng)
            stats.executions += 1
            try:
                o = target(data)
            except Bug as bug:
                name = _save_crash(crash_dir, len(stats.crashes), data, f"{what}\n{bug}")
                stats.crashes.append((name, f"[{what}] {bug}"))
                if log:
                    log(f"CRASH {name} [{what}]: {str(bug).splitlines()[0]}")
                continue
            key = _first_failure(o)
            stats.outcomes[key] = stats.outcomes.get(key, 0) + 1
            stats.opened += o.opened
            stats.fully_valid += key == "valid"
            stats.slowest = max(stats.slowest, o.seconds)
            stats.peak_traced = max(stats.peak_traced, o.traced_peak)
            if o.traced_peak > MEMORY_SLACK + MEMORY_FACTOR * len(data):
                stats.reservations.append((o.traced_peak, len(data), what))
            sig = o.signature()
            if sig not in seen and len(corpus) < 2000 and len(data) < 1 << 20:
                seen.add(sig)
                corpus.append(data)
            if log and stats.executions % 500 == 0:
                log(f"{stats.executions} execs, {len(corpus)} corpus, "
                    f"{len(stats.crashes)} crashes, {time.monotonic() - start:.0f} s")
    finally:
        target.close()
        stats.seconds = time.monotonic() - start
        stats.corpus_size = len(corpus)
    return stats


def _save_crash(crash_dir: str | os.PathLike[str] | None, n: int, data: bytes, text: str) -> str:
    if crash_dir is None:
        return f"crash-{n}"
    d = Path(crash_dir)
    d.mkdir(parents=True, exist_ok=True)
    p = d / f"crash-{n:04d}-{layout.checksum(data):016x}.llmc"
    p.write_bytes(data)
    p.with_suffix(".txt").write_text(text)
    return str(p)
