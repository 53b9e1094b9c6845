"""Write the conformance vectors in spec/vectors/ (run once per new vector; never rewrite one).

    python tools/make_vectors.py [--only NAME] [--force]

Each vector ``NAME.llmc`` has ``NAME.json``: for valid files, every tensor's dtype, shape
and XXH3-64 of its decoded bytes, plus attachments; for invalid files, the error a reader
must report, by its name in the error taxonomy (spec/FORMAT.md §8.1: ``Truncated``,
``Malformed``, ``Checksum``, ``Limit``, ``UnsupportedVersion``, ``UnsupportedCodec``,
``Decode``, ``DigestMismatch``), when (``at``: ``open`` or ``decode``) and, for ``decode``,
of which tensor (``tensor``) or attachment (``attachment``); everything else still reads.
``v1-ggml-nonfinite``'s tensors also carry NaN keys (``nan_keys``, spec §11), and no
``xxh3`` where two NaNs met in one operation (bits implementation-defined, §7.6).
Existing vectors are left alone unless ``--force`` (which a published vector must never
need: tests/test_vectors.py proves old files still read).
"""

from __future__ import annotations

import argparse
import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import ml_dtypes
import msgpack
import numpy as np

import llmc_format
from llmc_format.container import layout
from llmc_format.container.index import TensorEntry
from llmc_format.container.writer import Writer, append_metadata_update
from llmc_format.dtypes import name_of
from llmc_format.pipeline.pack import (
    TIMING_KEYS,
    PackedTensor,
    encode_one,
    tensor_digest,
    write_packed,
)

VECTORS = Path(__file__).resolve().parent.parent / "spec" / "vectors"
#: ``sha256sum`` lines of every published vector file: tests/test_vectors.py pins them
DIGESTS = VECTORS / "SHA256SUMS"


def _basic_tensors() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1234)
    w = (rng.standard_normal((64, 48)) * 0.02).astype(np.float32)
    return {
        "layer.weight.f32": w,
        "layer.weight.bf16": w.astype(ml_dtypes.bfloat16),
        "layer.weight.f16": w.astype(np.float16),
        "specials.f32": np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-45, 3.4e38],
                                 dtype=np.float32),
        "ids.i64": np.arange(-5, 5, dtype=np.int64),
        "mask.bool": np.array([[True, False], [False, True]]),
        "scalar.f64": np.array(3.25, dtype=np.float64),
        "empty.f32": np.zeros((0, 8), dtype=np.float32),
        "q.i8": rng.integers(-128, 128, size=(16, 16), dtype=np.int8),
    }


def _lossy_tensors() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(99)
    return {
        "mlp.weight": (rng.standard_normal((256, 192)) * 0.05).astype(np.float32),
        "norm.weight": np.ones(192, dtype=np.float32),
    }


def _ggml_blocks(type_name: str, rows: int, blocks_per_row: int, seed: int) -> np.ndarray:
    """Deterministic blocks of a ggml type: random bytes, every 2-byte field a finite
    float16 in [0, 0.01) (so that scales are sane), as uint8 (rows, row_bytes)."""
    from llmc_format.codecs.ggml_types import TYPES

    t = TYPES[type_name]
    rng = np.random.default_rng(seed)
    n = rows * blocks_per_row
    b = rng.integers(0, 256, size=(n, t.type_size), dtype=np.uint8)
    off = 0
    for size, width in t.fields:
        if width == 2:
            b[:, off:off + size] = rng.uniform(0, 0.01, (n, size // 2)).astype(
                np.float16).view(np.uint8).reshape(n, size)
        off += size
    return b.reshape(rows, -1)


#: the v1-ggml vector: name -> (ggml type, rows, blocks per row, array stages before ggml)
GGML_VECTOR = {
    "attn_q.Q4_1": ("Q4_1", 16, 2, [{"id": "rowperm", "heads": 2}]),
    "embed.Q8_0": ("Q8_0", 10, 3, []),
    "mlp.Q4_K": ("Q4_K", 6, 1, []),
    "mlp.Q6_K": ("Q6_K", 5, 2, []),
    "mlp.Q5_0": ("Q5_0", 7, 2, []),
    "mlp.IQ4_XS": ("IQ4_XS", 3, 1, []),
    "norm.F16": ("F16", 1, 40, []),
}


def write_ggml_vector(p: Path) -> dict[str, int]:
    """v1-ggml (spec §7.6/§7.7): tensors stored as ggml blocks, chunked 4 rows per blob.
    Returns name -> XXH3-64 of each tensor's blocks (what ``decode_blocks`` must give)."""
    from llmc_format.codecs.base import ArraySpec
    from llmc_format.codecs.ggml_types import TYPES
    from llmc_format.codecs.stages import encode_native
    from llmc_format.container.index import TensorEntry
    from llmc_format.container.writer import Writer

    blocks_digest = {}
    with Writer(p, metadata={"purpose": "conformance", "vector": "v1-ggml"}) as w:
        for i, (name, (type_name, rows, bpr, stages)) in enumerate(GGML_VECTOR.items()):
            t = TYPES[type_name]
            raw = _ggml_blocks(type_name, rows, bpr, seed=100 + i)
            spec = ArraySpec(t.dtype, (rows, bpr * t.block_size), name)
            chunk = 4 * raw.shape[1]
            enc = encode_native(raw, spec, [*stages, {"id": "ggml", "type": type_name,
                                                      "chunk_bytes": chunk}])
            refs = tuple(w.add_blob(b, stage) for stage, b in enc.blobs)
            blocks_digest[name] = layout.checksum(raw.tobytes())
            w.add_tensor(TensorEntry(name, spec.dtype, spec.shape, tuple(enc.pipeline), refs,
                                     digest={"source": blocks_digest[name]}))
    return blocks_digest


#: the v1-gguf vector: GGUF name -> (ggml type, rows, blocks per row, rows per blob, array
#: stages before ggml); every type llmc stores whose values §7.6 defines and v1-ggml lacks
GGUF_VECTOR = {
    "blk.0.attn_q.weight": ("Q2_K", 4, 1, 2, [{"id": "rowperm", "heads": 2}]),
    "blk.0.attn_k.weight": ("Q3_K", 3, 1, 2, []),
    "blk.0.attn_v.weight": ("Q5_K", 2, 1, 1, []),
    "blk.0.ffn_up.weight": ("Q5_1", 3, 2, 2, []),
    "blk.0.ffn_gate.weight": ("Q4_0", 2, 3, 2, []),
    "blk.0.ffn_down.weight": ("Q4_K", 2, 1, 2, []),
    "blk.1.attn_q.weight": ("Q6_K", 2, 1, 1, []),
    "blk.1.attn_k.weight": ("TQ1_0", 2, 1, 1, []),
    "blk.1.attn_v.weight": ("TQ2_0", 2, 1, 2, []),
    "blk.1.ffn_up.weight": ("MXFP4", 3, 2, 2, []),
    "blk.1.ffn_gate.weight": ("NVFP4", 2, 2, 1, []),
    "blk.1.ffn_down.weight": ("IQ4_NL", 2, 2, 2, []),
    "blk.2.attn_q.weight": ("IQ2_XXS", 2, 1, 1, []),
    "blk.2.attn_k.weight": ("IQ2_XS", 2, 1, 2, []),
    "blk.2.attn_v.weight": ("IQ2_S", 2, 1, 1, []),
    "blk.2.ffn_up.weight": ("IQ3_XXS", 2, 1, 2, []),
    "blk.2.ffn_gate.weight": ("IQ3_S", 2, 1, 1, []),
    "blk.2.ffn_down.weight": ("IQ1_S", 2, 1, 2, []),
    "blk.3.attn_q.weight": ("IQ1_M", 2, 1, 1, []),
    "blk.3.attn_k.weight": ("Q8_0", 2, 2, 2, []),
    "blk.3.attn_v.weight": ("BF16", 2, 40, 1, []),
    "output_norm.weight": ("F32", 1, 24, 1, []),
}


def _gguf_blocks(type_name: str, rows: int, blocks_per_row: int, seed: int) -> np.ndarray:
    """``_ggml_blocks``, plus realistic scales for the types without a float16 field:
    MXFP4's E8M0 exponent in [118, 126] (scale 2^-9 .. 2^-1), NVFP4's E4M3 scales below
    0x40, IQ1_S's qh words fully random, IQ1_M's float16 scale (spread over the top
    nibbles of its 4 scale words) in [0, 0.01)."""
    b = _ggml_blocks(type_name, rows, blocks_per_row, seed)
    n = rows * blocks_per_row
    rng = np.random.default_rng(seed + 1)
    blocks = b.reshape(n, -1)
    if type_name == "MXFP4":
        blocks[:, 0] = rng.integers(118, 127, n)
    elif type_name == "NVFP4":
        blocks[:, 0:4] = rng.integers(1, 0x40, (n, 4))
    elif type_name == "IQ1_S":  # qh is bits, not a float16: both signs of the delta
        blocks[:, 34:50] = rng.integers(0, 256, (n, 16))
    elif type_name == "IQ1_M":
        d = rng.uniform(0, 0.01, n).astype(np.float16).view(np.uint16).astype(np.uint16)
        sc = blocks[:, 48:56].copy().view("<u2")
        for k in range(4):
            sc[:, k] = (sc[:, k] & 0x0FFF) | (((d >> (4 * k)) & 0xF) << 12)
        blocks[:, 48:56] = sc.view(np.uint8)
    return b


def write_gguf(path: Path) -> None:
    """The small GGUF file of ``v1-gguf``: GGUF_VECTOR's tensors in that data order (32-byte
    alignment, so gaps of padding between them), a few metadata keys, and ``rope_freqs``,
    which the archive keeps only inside its layout record (``data``)."""
    import gguf

    from llmc_format.codecs.ggml_types import TYPES

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("llmc conformance v1-gguf")
    w.add_block_count(4)
    w.add_uint32("llmc.vector.revision", 3)
    for i, (name, (type_name, rows, bpr, _, _)) in enumerate(GGUF_VECTOR.items()):
        raw = _gguf_blocks(type_name, rows, bpr, seed=300 + i)
        qtype = gguf.GGMLQuantizationType[type_name]
        w.add_tensor(name, raw, raw_shape=raw.shape, raw_dtype=qtype)
        assert raw.shape[1] == bpr * TYPES[type_name].type_size
    freqs = np.linspace(1.0, 2.0, 10, dtype=np.float32)
    w.add_tensor("rope_freqs.weight", freqs)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def write_gguf_vector(p: Path) -> dict:
    """v1-gguf (spec §7.6-§7.8): the tensors of a small GGUF file (``write_gguf``) stored as
    ``ggml`` stages with ``digest.decoded``, and the GGUF layout record from which a reader
    rebuilds that file byte for byte. Returns ``{"sha256", "size"}`` of the GGUF file."""
    import tempfile

    import gguf

    from llmc_format.codecs.base import ArraySpec
    from llmc_format.codecs.ggml_types import TYPES
    from llmc_format.io.gguf_layout import LAYOUT_ATTACHMENT, layout_record
    from llmc_format.pipeline.pack import encode_native_one

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "v1-gguf.gguf"
        write_gguf(src)
        reader = gguf.GGUFReader(str(src))
        record = layout_record(src, reader.tensors, int(reader.data_offset),
                               {name: name for name in GGUF_VECTOR})
        data = src.read_bytes()
        by_name = {t.name: t for t in reader.tensors}
        with Writer(p, metadata={"purpose": "conformance", "vector": "v1-gguf"}) as w:
            for name, (type_name, rows, bpr, per_blob, stages) in GGUF_VECTOR.items():
                t = TYPES[type_name]
                info = by_name[name]
                start = int(info.data_offset)
                raw = np.frombuffer(data[start:start + int(info.n_bytes)], np.uint8).reshape(rows, -1)
                spec = ArraySpec(t.dtype, (rows, bpr * t.block_size), name)
                ggml = {"id": "ggml", "type": type_name, "chunk_bytes": per_blob * raw.shape[1]}
                write_packed(w, encode_native_one(name, raw, spec, [*stages, ggml]))
            w.add_attachment(LAYOUT_ATTACHMENT, record, compress=True)
        return {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}


#: binary16 bit patterns of v1-ggml-nonfinite's fields
F16_PINF, F16_NINF = 0x7C00, 0xFC00
#: NaNs with distinct signs and payloads: negative signalling, positive quiet, negative
#: quiet with payload 1, negative signalling with payload 1
F16_NAN_NS, F16_NAN_PQ, F16_NAN_NQ1, F16_NAN_NS1 = 0xFD55, 0x7E2A, 0xFE01, 0xFC01
#: the canonical NaN that replaces every NaN in ``xxh3_nan_canonical`` (spec §11)
CANONICAL_NAN = {"float32": 0x7FC00000, "float16": 0x7E00, "bfloat16": 0x7FC0}


def _set_f16(block: np.ndarray, offset: int, bits: int) -> None:
    block[offset:offset + 2] = np.array([bits], "<u2").view(np.uint8)


def _quantized(type_name: str, rows: int, cols: int, seed: int) -> np.ndarray:
    """gguf-py's own quantization of random weights (uint8 (rows, row_bytes)); for types
    it cannot quantize, ``_gguf_blocks``'s random blocks with sane scales."""
    import gguf

    from llmc_format.codecs.ggml_types import TYPES

    if type_name in ("Q8_0", "Q4_1"):
        a = np.random.default_rng(seed).standard_normal((rows, cols)).astype(np.float32)
        return np.array(gguf.quants.quantize(a, gguf.GGMLQuantizationType[type_name]))
    return _gguf_blocks(type_name, rows, cols // TYPES[type_name].block_size, seed)


def _nonfinite_q8_0_inf(b: np.ndarray) -> None:
    """+inf scale (row 0, block 0) and -inf scale (row 1, block 1), each with zero quants:
    ±inf, and inf·0 = the default NaN 0xFFC00000."""
    _set_f16(b[0, 0:34], 0, F16_PINF)
    _set_f16(b[1, 34:68], 0, F16_NINF)
    b[0, 2:5] = b[1, 36:39] = 0


def _nonfinite_q8_0_inf_only(b: np.ndarray) -> None:
    """+inf scale with no zero quant: infinities and no NaN (keeps ``digest.decoded``)."""
    _set_f16(b[0, 0:34], 0, F16_PINF)
    b[0, 2:34][b[0, 2:34] == 0] = 1


def _nonfinite_q8_0_nan(b: np.ndarray) -> None:
    """One NaN scale per row: negative signalling with a payload, positive quiet."""
    _set_f16(b[0, 34:68], 0, F16_NAN_NS)
    _set_f16(b[1, 0:34], 0, F16_NAN_PQ)


def _nonfinite_q4_1_one_nan(b: np.ndarray) -> None:
    """Q4_1 ``d · q + m`` with at most one NaN operand per operation: NaN d; NaN m; NaN d
    with m = +inf; d = +inf with m = -inf (inf - inf and inf·0: default NaNs)."""
    _set_f16(b[0], 0, F16_NAN_NS)
    _set_f16(b[1], 2, F16_NAN_PQ)
    _set_f16(b[2], 0, F16_NAN_NQ1)
    _set_f16(b[2], 2, F16_PINF)
    _set_f16(b[3], 0, F16_PINF)
    _set_f16(b[3], 2, F16_NINF)
    b[3, 4] &= 0xF0  # a zero nibble: inf·0


def _nonfinite_q4_1_two_nan(b: np.ndarray) -> None:
    """Two-NaN operations: row 1 has NaN d and NaN m (other payloads and signs); row 2 has
    d = +inf at a zero nibble (default NaN) plus NaN m. Row 0 stays finite."""
    _set_f16(b[1], 0, F16_NAN_PQ)
    _set_f16(b[1], 2, F16_NAN_NS)
    _set_f16(b[2], 0, F16_PINF)
    _set_f16(b[2], 2, F16_NAN_NS1)
    b[2, 4] &= 0xF0


def _nonfinite_q4_k(b: np.ndarray) -> None:
    """Q4_K ``(d · sc) · q − (dmin · m)``: NaN d (row 0); dmin = −inf with sub-block 0's
    min m_0 = 0 (−inf·0, a default NaN) (row 1); d = +inf (row 2)."""
    _set_f16(b[0], 0, F16_NAN_NS)
    _set_f16(b[1], 2, F16_NINF)
    b[1, 4 + 4] &= 0xC0  # scales[4] & 63 = m_0 = 0
    _set_f16(b[2], 0, F16_PINF)


def _nonfinite_iq2_xxs(b: np.ndarray) -> None:
    """A codebook type: negative NaN d (its sign kept through the ±1 sign factors), and
    d = −inf (no grid entry is 0: infinities only)."""
    _set_f16(b[0], 0, F16_NAN_NS)
    _set_f16(b[1], 0, F16_NINF)


#: v1-ggml-nonfinite: name -> (ggml type, rows, columns, rows per blob, patch of the
#: blocks, whether some operation meets two NaN operands)
NONFINITE_VECTOR: dict[str, tuple[str, int, int, int, Callable[[np.ndarray], None], bool]] = {
    "q8_0.inf": ("Q8_0", 2, 64, 1, _nonfinite_q8_0_inf, False),
    "q8_0.inf_only": ("Q8_0", 2, 32, 2, _nonfinite_q8_0_inf_only, False),
    "q8_0.nan": ("Q8_0", 2, 64, 1, _nonfinite_q8_0_nan, False),
    "q4_1.one_nan": ("Q4_1", 4, 32, 2, _nonfinite_q4_1_one_nan, False),
    "q4_1.two_nan": ("Q4_1", 3, 32, 2, _nonfinite_q4_1_two_nan, True),
    "q4_k.nonfinite": ("Q4_K", 3, 256, 2, _nonfinite_q4_k, False),
    "iq2_xxs.nonfinite": ("IQ2_XXS", 2, 256, 1, _nonfinite_iq2_xxs, False),
}


def _untimed(p: PackedTensor) -> PackedTensor:
    """Without this run's encode/decode seconds (as ``pack`` by default): the same bytes
    on every run."""
    p.rd = {k: v for k, v in (p.rd or {}).items() if k not in TIMING_KEYS}
    return p


def write_ggml_nonfinite_vector(p: Path) -> dict[str, bool]:
    """v1-ggml-nonfinite (spec §7.6, "Non-finite results"): ``ggml`` tensors whose blocks
    hold infinite and NaN scales, written by the pack path (``encode_native_one``), so the
    digest rule decides which entries carry ``digest.decoded``; reproducible byte for
    byte (no timings). Returns name -> whether an operation of its blocks meets two NaNs
    (its JSON then has no ``xxh3``)."""
    from llmc_format.codecs.base import ArraySpec
    from llmc_format.codecs.ggml_types import TYPES
    from llmc_format.pipeline.pack import encode_native_one

    two_nan = {}
    with Writer(p, metadata={"purpose": "conformance", "vector": "v1-ggml-nonfinite"}) as w:
        for i, (name, (type_name, rows, cols, per_blob, patch, two)) in enumerate(
                NONFINITE_VECTOR.items()):
            t = TYPES[type_name]
            raw = _quantized(type_name, rows, cols, seed=500 + i)
            patch(raw)
            spec = ArraySpec(t.dtype, (rows, cols), name)
            ggml = {"id": "ggml", "type": type_name, "chunk_bytes": per_blob * raw.shape[1]}
            write_packed(w, _untimed(encode_native_one(name, raw, spec, [ggml])))
            two_nan[name] = two
        f16 = np.array([[1.5, 0, -2.0, 0], [0, 0.0, 0, 3.0]], np.float16)
        bits = f16.view(np.uint16)
        bits[0, 1], bits[0, 3], bits[1, 0], bits[1, 2] = F16_NAN_NS, F16_PINF, F16_NAN_PQ, F16_NINF
        spec = ArraySpec("float16", (2, 4), "f16.nan")
        write_packed(w, _untimed(encode_native_one(
            "f16.nan", f16.view(np.uint8).reshape(2, -1), spec, [{"id": "ggml", "type": "F16"}])))
        two_nan["f16.nan"] = False
    return two_nan


def write_ggml_scales_vector(p: Path) -> None:
    """v1-ggml-scales (spec §7.6, revision 1.7): NVFP4 blocks whose scale bytes take all
    256 values (0x7F and 0xFF among them: the zero test is on the whole byte, so 0xFF is
    240), a Q8_K tensor (in no other vector; its binary32 ``d`` written as finite values),
    and an empty F32 tensor with rows, shape [3, 0] (``rows_per_blob`` 0, no blob)."""
    from llmc_format.codecs.base import ArraySpec
    from llmc_format.codecs.ggml_types import TYPES
    from llmc_format.pipeline.pack import encode_native_one

    rng = np.random.default_rng(1700)
    nv = TYPES["NVFP4"]
    blocks = rng.integers(0, 256, size=(64, nv.type_size), dtype=np.uint8)
    blocks[:, :4] = np.arange(256, dtype=np.uint8).reshape(64, 4)  # every scale byte once
    q8k = TYPES["Q8_K"]
    kb = rng.integers(0, 256, size=(2, q8k.type_size), dtype=np.uint8)
    kb[:, :4] = rng.uniform(-0.02, 0.02, (2, 1)).astype("<f4").view(np.uint8)
    tensors = [("nvfp4.all_scales", "NVFP4", blocks.reshape(4, -1), (4, 16 * nv.block_size), 2),
               ("q8_k", "Q8_K", kb, (2, q8k.block_size), 1),
               ("f32.rows_of_nothing", "F32", np.zeros((3, 0), np.uint8), (3, 0), 1)]
    with Writer(p, metadata={"purpose": "conformance", "vector": "v1-ggml-scales"}) as w:
        for name, type_name, raw, shape, per_blob in tensors:
            spec = ArraySpec(TYPES[type_name].dtype, shape, name)
            ggml = {"id": "ggml", "type": type_name,
                    "chunk_bytes": max(1, per_blob * raw.shape[1])}
            write_packed(w, _untimed(encode_native_one(name, raw, spec, [ggml])))


def nan_canonical(arr: np.ndarray) -> np.ndarray:
    """A copy of a float tensor with every NaN replaced by its dtype's ``CANONICAL_NAN``."""
    canon = np.ascontiguousarray(arr).copy()
    ints = canon.view(f"<u{canon.dtype.itemsize}")
    ints[np.isnan(arr.astype(np.float32))] = CANONICAL_NAN[name_of(arr.dtype)]
    return canon


def nan_keys(arr: np.ndarray) -> dict[str, int]:
    """``nan_count``, ``nan_mask_xxh3`` (one byte per element, C order: 1 for a NaN, else
    0) and ``xxh3_nan_canonical`` (``nan_canonical``'s bytes) of a decoded float tensor
    (spec §11, v1-ggml-nonfinite)."""
    mask = np.isnan(arr.astype(np.float32))
    return {"nan_count": int(mask.sum()),
            "nan_mask_xxh3": layout.checksum(mask.astype(np.uint8).tobytes()),
            "xxh3_nan_canonical": tensor_digest(nan_canonical(arr))}


def nonfinite_expected(path: Path, two_nan: dict[str, bool], features: list[str]) -> dict:
    """v1-ggml-nonfinite's JSON: per tensor ``dtype``, ``shape``, ``digest_decoded`` (the
    entry carries one), the ``nan_keys``, and ``xxh3`` unless some operation of its blocks
    met two NaNs (those NaN bits are implementation-defined, §7.6)."""
    from llmc_format.container.reader import Reader

    expected: dict = {"valid": True, "tensors": {}, "attachments": {}, "features": features}
    with llmc_format.safe_open(path) as f, Reader(path) as r:
        for k in f.keys():
            arr = f.get_tensor(k)
            entry = {"dtype": f.info(k)["dtype"], "shape": list(arr.shape),
                     "digest_decoded": "decoded" in (r.tensor(k).digest or {}), **nan_keys(arr)}
            if not two_nan[k]:
                entry["xxh3"] = tensor_digest(arr)
            expected["tensors"][k] = entry
    return expected


def make_valid(name: str, write: Callable[[Path], None], features: list[str] | None = None) -> None:
    path = VECTORS / f"{name}.llmc"
    write(path)
    expected: dict = {"valid": True, "tensors": {}, "attachments": {}}
    if features:
        expected["features"] = features
    with llmc_format.safe_open(path) as f:
        for k in f.keys():
            arr = f.get_tensor(k)
            expected["tensors"][k] = {"dtype": f.info(k)["dtype"], "shape": list(arr.shape),
                                      "xxh3": tensor_digest(arr)}
        for a in f.attachments():
            expected["attachments"][a] = layout.checksum(f.read_attachment(a))
    (VECTORS / f"{name}.json").write_text(json.dumps(expected, indent=1, sort_keys=True) + "\n")


def record_digest(path: Path) -> None:
    """Add ``path``'s SHA-256 to SHA256SUMS (a published vector's line never changes)."""
    lines = DIGESTS.read_text().splitlines() if DIGESTS.exists() else []
    kept = [ln for ln in lines if not ln.endswith(f"  {path.name}")]
    kept.append(f"{hashlib.sha256(path.read_bytes()).hexdigest()}  {path.name}")
    DIGESTS.write_text("\n".join(sorted(kept, key=lambda ln: ln.split("  ", 1)[1])) + "\n")


def write_archive(path: Path, tensors: list[tuple[str, np.ndarray, list[dict]]], *,
                  aliases: dict[str, str] | None = None,
                  attachments: list[tuple[str, bytes, bool]] = (),  # type: ignore[assignment]
                  metadata: dict | None = None) -> None:
    """An archive whose every tensor has the pipeline given here (not a policy's choice)."""
    with Writer(path, metadata={"purpose": "conformance", **(metadata or {})}) as w:
        for name, array, pipeline in tensors:
            write_packed(w, encode_one(name, array, pipeline))
        for alias, target in (aliases or {}).items():
            t = next(x for x in tensors if x[0] == target)[1]
            w.add_tensor(TensorEntry(alias, name_of(t.dtype), t.shape,
                                     alias_of=target))
        for name, data, compress in attachments:
            w.add_attachment(name, data, compress=compress)


def _w(shape: tuple[int, ...], seed: int, dtype: object = np.float32) -> np.ndarray:
    """Weight-like values: Laplace-distributed, scale 0.03, a few outliers."""
    rng = np.random.default_rng(seed)
    w = rng.laplace(size=shape) * 0.03
    w.reshape(-1)[:: max(1, w.size // 5)] *= 8
    return w.astype(dtype)


def _affine(bits: int = 10, **kw: object) -> dict:
    return {"id": "affine", "bits": bits, **kw}


def _factors(n: int, seed: int, lo: float = -3.0, hi: float = 3.0) -> np.ndarray:
    """Positive multipliers spread log-uniformly over 2^lo..2^hi (not binary16 values:
    the encoder rounds them)."""
    return 2.0 ** np.random.default_rng(seed).uniform(lo, hi, n)


def _diagscale(cols: np.ndarray | None, rows: np.ndarray | None) -> dict:
    return {"id": "diagscale", "col_scale": cols, "row_scale": rows}


def diagscale_tensors() -> list[tuple[str, np.ndarray, list[dict]]]:
    """``v1-lossy-diagscale`` (spec §7.9): the stage before each quantization, on several
    ranks and dtypes, and before ``exact``; ``ds.extremes`` has the smallest and largest
    normal binary16 multipliers (its weights sized so nothing overflows)."""
    bf16 = ml_dtypes.bfloat16
    ext = np.ones(24)
    ext[::3], ext[1::3] = 2.0**-14, 65504.0
    return [
        ("ds.both.blockdct", _w((64, 96), 28),
         [_diagscale(_factors(96, 29), _factors(64, 30, -1, 1)), {"id": "blockdct", "bits": 10},
          {"id": "vvc", "bits": 10, "qp": 30}]),
        ("ds.cols.affine.bf16", _w((40, 72), 31, bf16),
         [_diagscale(_factors(72, 32), None), _affine(10), {"id": "hevc", "bits": 10, "qp": 28}]),
        ("ds.rows.rank3.f16", _w((12, 4, 10), 33, np.float16),
         [_diagscale(None, _factors(12, 34)), _affine(10), {"id": "vvc", "bits": 10, "qp": 30}]),
        ("ds.rank1", _w((200,), 35), [_diagscale(np.array([0.7]), _factors(200, 36)),
                                      _affine(10), {"id": "vvc", "bits": 10, "qp": 30}]),
        ("ds.exact.f64", _w((5, 24), 37, np.float64) * np.repeat([1e-4, 1.0, 100.0, 1.0, 1.0],
                                                                  24).reshape(5, 24),
         [_diagscale(ext, _factors(5, 38)), {"id": "exact"}]),
        ("ds.exact.0d", np.array(1.5, dtype=np.float32),
         [_diagscale(np.array([1 / 3]), np.array([3.0])), {"id": "exact"}]),
    ]


def feature_vectors() -> dict[str, tuple[Callable[[Path], None], list[str]]]:
    """The vectors of issue 20: one per feature a reader must get right (a few KB each)."""
    bf16 = ml_dtypes.bfloat16

    def lossy_vvc_2(p: Path) -> None:  # v1-lossy-vvc's recipe, after the bitstream fix
        llmc_format.save_file(_lossy_tensors(), p, codec="vvc", qp=32, jobs=1)

    def lossy_hevc(p: Path) -> None:
        write_archive(p, [
            # width 72: not a multiple of 16 (dec265's own tool crashes writing it)
            ("hevc.row10", _w((96, 72), 1), [_affine(10), {"id": "hevc", "bits": 10, "qp": 28}]),
            ("hevc.row12", _w((64, 64), 2), [_affine(12), {"id": "hevc", "bits": 12, "qp": 28}]),
            ("hevc.shift2", _w((48, 80), 3), [_affine(8), {"id": "hevc", "bits": 8, "qp": 24}]),
            ("hevc.blockdct", _w((64, 96), 4), [{"id": "blockdct", "bits": 10},
                                                {"id": "hevc", "bits": 10, "qp": 26}]),
        ])

    def lossy_av1(p: Path) -> None:
        svt = {"id": "av1", "encoder": "libsvtav1", "preset": 10}
        aom = {"id": "av1", "encoder": "libaom-av1", "preset": 6}
        write_archive(p, [
            ("av1.svt10", _w((64, 96), 5), [_affine(10), {**svt, "bits": 10, "qp": 30}]),
            ("av1.svt.shift4", _w((32, 64), 6), [_affine(6), {**svt, "bits": 6, "qp": 20}]),
            ("av1.aom12", _w((48, 64), 7), [_affine(12), {**aom, "bits": 12, "qp": 24}]),
        ])

    def lossless_ffv1(p: Path) -> None:
        write_archive(p, [
            ("ffv1.gray8", _w((23, 37), 8), [_affine(8), {"id": "ffv1", "bits": 8}]),
            ("ffv1.gray10", _w((40, 50), 9), [_affine(10), {"id": "ffv1", "bits": 10}]),
            ("ffv1.gray12", _w((16, 64), 10), [_affine(12), {"id": "ffv1", "bits": 12}]),
            ("ffv1.gray16", _w((9, 33), 11, np.float64), [_affine(16), {"id": "ffv1", "bits": 16}]),
        ])

    def affine_variants(p: Path) -> None:
        vvc = {"id": "vvc", "bits": 10, "qp": 30}
        write_archive(p, [
            ("group.f16", _w((64, 160), 12), [_affine(10, granularity="group", group_size=48,
                                                      param_dtype="float16"), vvc]),
            ("tensor.bf16params", _w((48, 64), 13, bf16),
             [_affine(10, granularity="tensor", param_dtype="bfloat16"), vvc]),
            ("row.f32params.mseclip", _w((40, 64), 14),
             [_affine(10, clip="mse", param_dtype="float32"), vvc]),
            ("row.f64.bf16params", _w((32, 48), 15, np.float64),
             [_affine(9, param_dtype="bfloat16"), {**vvc, "bits": 9}]),
            ("blockdct16.bf16", _w((48, 80), 16, bf16), [{"id": "blockdct", "bits": 10,
                                                          "block": 16}, vvc]),
        ])

    def tiling(p: Path) -> None:
        small = {"max_width": 64, "max_height": 64, "target_pixels": 4096}
        write_archive(p, [
            # 3 bands x 4 tile columns; the last band and column are padded
            ("tiled.affine", _w((150, 200), 17), [_affine(10), {"id": "vvc", "bits": 10, "qp": 30,
                                                                **small}]),
            # blockdct blocks against tile edges: tiles of 64 on the 32-grid, edge bands
            ("tiled.blockdct", _w((100, 170), 18), [{"id": "blockdct", "bits": 10},
                                                    {"id": "vvc", "bits": 10, "qp": 30, **small}]),
            ("tiled.hevc", _w((72, 136), 19), [_affine(10), {"id": "hevc", "bits": 10, "qp": 28,
                                                             **small}]),
            ("tiled.ffv1", _w((30, 70), 20), [_affine(10), {"id": "ffv1", "bits": 10,
                                                            "max_width": 32, "max_height": 16,
                                                            "target_pixels": 256}]),
        ])

    def shapes(p: Path) -> None:
        vvc = {"id": "vvc", "bits": 10, "qp": 30, "max_width": 128, "target_pixels": 4096}
        write_archive(p, [
            ("rank1", _w((300,), 21), [_affine(10), vvc]),  # one row: 1 x 300, 3 tile columns
            ("rank3", _w((6, 8, 24), 22), [_affine(10), vvc]),  # 6 x 192
            ("rank4.bf16", _w((2, 3, 8, 16), 23, bf16), [_affine(10), vvc]),  # 2 x 384
            ("rank3.blockdct", _w((4, 40, 36), 24), [{"id": "blockdct", "bits": 10}, vvc]),
        ])

    def exact_dtypes(p: Path) -> None:
        rng = np.random.default_rng(25)
        f8 = np.array([0.0, -0.0, 1.5, -448.0, 448.0, 2.0**-9, np.nan, 0.1], dtype=np.float32)
        write_archive(p, [
            ("f8_e4m3fn", f8.astype(ml_dtypes.float8_e4m3fn).reshape(2, 4), [{"id": "exact"}]),
            ("f8_e5m2", np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 57344.0, 2.0**-16, 0.3],
                                 dtype=np.float32).astype(ml_dtypes.float8_e5m2),
             [{"id": "exact"}]),
            ("u8", rng.integers(0, 256, (5, 7), dtype=np.uint8), [{"id": "exact"}]),
            ("u16", rng.integers(0, 1 << 16, (33,), dtype=np.uint16), [{"id": "exact"}]),
            ("u32", np.array([0, 1, 2**31, 2**32 - 1], dtype=np.uint32), [{"id": "exact"}]),
            ("u64", np.array([0, 2**63, 2**64 - 1], dtype=np.uint64), [{"id": "exact"}]),
            ("i16", rng.integers(-(1 << 15), 1 << 15, (4, 4, 2), dtype=np.int16), [{"id": "exact"}]),
            ("i32", np.array([-(2**31), -1, 0, 2**31 - 1], dtype=np.int32), [{"id": "exact"}]),
            ("bf16.specials", np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-40, 3e38],
                                       dtype=np.float32).astype(ml_dtypes.bfloat16),
             [{"id": "exact"}]),
            ("f64.rank5", rng.standard_normal((1, 2, 1, 3, 2)), [{"id": "exact"}]),
        ])

    def aliases_attachments(p: Path) -> None:
        emb = _w((64, 48), 26)
        config = json.dumps({"model_type": "conformance", "tie_word_embeddings": True,
                             "layers": list(range(40))}, indent=2).encode()
        write_archive(p, [
            ("embed.weight", emb, [_affine(10), {"id": "vvc", "bits": 10, "qp": 30}]),
            ("norm.weight", np.ones(48, dtype=np.float32), [{"id": "exact"}]),
        ], aliases={"lm_head.weight": "embed.weight", "norm.alias": "norm.weight"},
            attachments=[("config.json", config, True),  # compresses: stored zstd
                         ("tokenizer/merges.bin", bytes(np.random.default_rng(27).integers(
                             0, 256, 300, dtype=np.uint8)), True),  # random: stays raw
                         ("empty.txt", b"", True),  # an empty file is an empty zstd frame
                         ("notes/raw.txt", b"stored without compression\n" * 4, False)])

    def lossy_diagscale(p: Path) -> None:
        write_archive(p, diagscale_tensors())

    return {
        "v1-lossy-diagscale": (lossy_diagscale, [
            "diagscale cols+rows before blockdct+vvc", "diagscale cols before affine+hevc, "
            "bfloat16", "diagscale rows on rank 3 float16", "diagscale on rank 1 (n x 1 view)",
            "diagscale + exact, float64, 0-d", "binary16 multipliers from 2^-14 to 65504"]),
        "v1-lossy-vvc-2": (lossy_vvc_2, ["vvc", "affine row", "exact", "clean bitstream"]),
        "v1-lossy-hevc": (lossy_hevc, ["hevc", "gray10le", "gray12le", "shift 2", "blockdct"]),
        "v1-lossy-av1": (lossy_av1, ["av1 libsvtav1 yuv420p10le", "av1 libaom-av1 gray12le",
                                     "shift 4"]),
        "v1-lossless-ffv1": (lossless_ffv1, ["ffv1 gray/gray10le/gray12le/gray16le",
                                             "odd frame sizes (align 1)", "float64 source"]),
        "v1-affine-variants": (affine_variants, ["affine group/tensor granularity",
                                                 "param_dtype float16/bfloat16/float32",
                                                 "clip mse", "bits 9", "blockdct block 16"]),
        "v1-tiling": (tiling, ["multi-frame tiling: bands x tile columns", "edge padding",
                               "blockdct across tile edges", "hevc and ffv1 tiles"]),
        "v1-lossy-shapes": (shapes, ["rank-1 lossy", "rank-3 and rank-4 lossy",
                                     "blockdct on rank 3"]),
        "v1-exact-dtypes": (exact_dtypes, ["float8_e4m3fn", "float8_e5m2", "uint8..uint64",
                                           "int16/int32", "bfloat16 specials", "rank 5"]),
        "v1-aliases-attachments": (aliases_attachments, ["aliases (tied weights) of lossy and "
                                                         "exact tensors", "attachments raw and "
                                                         "zstd", "empty attachment",
                                                         "attachment paths"]),
    }


#: the error names of spec/FORMAT.md §8.1 (llmc_format.errors.*.kind)
ERROR_KINDS = ("Truncated", "Malformed", "Checksum", "Limit", "UnsupportedVersion",
               "UnsupportedCodec", "Decode", "DigestMismatch")


def expect_error(error: str, at: str = "open", *, tensor: str | None = None,
                 attachment: str | None = None) -> dict:
    """The JSON of an invalid vector: which error, at open or when decoding what."""
    if error not in ERROR_KINDS or at not in ("open", "decode"):
        raise ValueError(f"unknown error {error!r} or stage {at!r}")
    if (at == "decode") != (tensor is not None or attachment is not None):
        raise ValueError("a decode error names exactly the tensor or attachment it concerns")
    out: dict = {"valid": False, "error": error, "at": at}
    if tensor is not None:
        out["tensor"] = tensor
    if attachment is not None:
        out["attachment"] = attachment
    return out


def make_invalid(name: str, base: str, patch: Callable[[bytearray], None],
                 expect: dict) -> None:
    data = bytearray((VECTORS / f"{base}.llmc").read_bytes())
    patch(data)
    (VECTORS / f"{name}.llmc").write_bytes(bytes(data))
    (VECTORS / f"{name}.json").write_text(json.dumps(expect) + "\n")


def _set_header(data: bytearray, **fields: int) -> None:
    h = layout.Header.unpack(bytes(data[:64]))
    vals = {"major": h.major, "minor": h.minor, "required_features": h.required_features,
            "optional_features": h.optional_features, "alignment": h.alignment, **fields}
    data[:64] = layout.Header(**vals).pack()


def _flip_first_blob_byte(data: bytearray) -> None:
    data[layout.HEADER_SIZE] ^= 0x01  # data_start is 64 with the default alignment


def _with_index(make_raw: Callable[[dict], bytes]) -> Callable[[bytearray], None]:
    """A patch replacing the index by ``make_raw(index)``, footer re-checksummed: the file
    is intact (every checksum matches) and only a rule of the spec can reject it."""
    def patch(data: bytearray) -> None:
        f = layout.Footer.unpack(bytes(data[-48:]), len(data) - 48)
        obj = msgpack.unpackb(bytes(data[f.index_offset: f.index_offset + f.index_length]))
        raw = make_raw(obj)
        data[f.index_offset:] = raw + layout.Footer(f.index_offset, len(raw),
                                                    layout.checksum(raw)).pack()
    return patch


def _mutated(mutate: Callable[[dict], None]) -> Callable[[bytearray], None]:
    def make_raw(obj: dict) -> bytes:
        mutate(obj)
        return msgpack.packb(obj, use_bin_type=True)
    return _with_index(make_raw)


def _duplicate_data_end(obj: dict) -> bytes:
    """The index with ``data_end`` written twice (the same value: still a duplicate)."""
    packer = msgpack.Packer(use_bin_type=True)
    raw = packer.pack_map_header(len(obj) + 1)
    for k, v in obj.items():
        raw += packer.pack(k) + packer.pack(v)
    return raw + packer.pack("data_end") + packer.pack(obj["data_end"])


def _tensor(obj: dict, name: str) -> dict:
    return next(t for t in obj["tensors"] if t["name"] == name)


def _user_timestamp(obj: dict) -> None:
    obj["metadata"]["user"]["when"] = msgpack.Timestamp(1764979200, 0)


def _alias_with_pipeline(obj: dict) -> None:
    q = _tensor(obj, "q.i8")
    obj["tensors"].append({"name": "q.alias", "dtype": q["dtype"], "shape": q["shape"],
                           "alias_of": "q.i8", "pipeline": q["pipeline"]})


#: invalid vectors of spec revision 1.1 (FORMAT.md §5, §5.3, §5.6, §7): intact files that
#: break one rule each, so a reader shows it applies the rule and names its error
RULE_VECTORS: dict[str, tuple[Callable[[bytearray], None], dict]] = {
    "bad-duplicate-key": (_with_index(_duplicate_data_end), expect_error("Malformed")),
    "bad-msgpack-timestamp": (_mutated(_user_timestamp), expect_error("Malformed")),
    "bad-alias-with-pipeline": (_mutated(_alias_with_pipeline), expect_error("Malformed")),
    "bad-config-missing-key": (
        _mutated(lambda o: _tensor(o, "q.i8")["pipeline"][0].pop("chunk_elems")),
        expect_error("Decode", "decode", tensor="q.i8")),
    "bad-unknown-codec": (
        _mutated(lambda o: _tensor(o, "q.i8")["pipeline"][0].update(id="zfp")),
        expect_error("UnsupportedCodec", "decode", tensor="q.i8")),
    "bad-digest-mismatch": (
        _mutated(lambda o: _tensor(o, "q.i8")["digest"].update(
            decoded=(_tensor(o, "q.i8")["digest"]["decoded"] + 1) % 2**64)),
        expect_error("DigestMismatch", "decode", tensor="q.i8")),
}


def write_bad_diagscale(path: Path) -> dict:
    """``bad-diagscale-subnormal``: an intact file (every checksum matches) whose tensor
    ``w.bad``'s column vector holds a subnormal binary16 (bits 0x0001): ``Decode`` when it
    is decoded (spec §7.9), while ``w.ok`` (the same tensor, valid vector) reads."""
    x = _w((4, 6), 39)
    with Writer(path, metadata={"purpose": "conformance"}) as w:
        for name in ("w.ok", "w.bad"):
            packed = encode_one(name, x, [_diagscale(_factors(6, 40), None), {"id": "exact"}])
            if name == "w.bad":
                blobs = packed.encoded.blobs
                stage, vec = blobs[0]
                assert stage == 0 and len(vec) == 12
                blobs[0] = (0, vec[:2] + (1).to_bytes(2, "little") + vec[4:])
            write_packed(w, packed)
    return expect_error("Decode", "decode", tensor="w.bad")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--only")
    ap.add_argument("--force", action="store_true")
    args = ap.parse_args()
    VECTORS.mkdir(parents=True, exist_ok=True)

    def exact_basic(p: Path) -> None:
        llmc_format.save_file(_basic_tensors(), p, metadata={"purpose": "conformance", "n": 1})

    def lossy_vvc(p: Path) -> None:
        llmc_format.save_file(_lossy_tensors(), p, codec="vvc", qp=32, jobs=1)

    def lossy_vvc_blockdct(p: Path) -> None:
        # core blocks, an edge band of 4 rows and an edge strip of 10 columns (spec §7.5)
        rng = np.random.default_rng(7)
        w = (rng.laplace(size=(100, 170)) * 0.03).astype(np.float32)
        llmc_format.save_file({"mlp.weight": w, "attn.weight.bf16": w[:64, :96].astype(
            ml_dtypes.bfloat16)}, p, codec="vvc", qp=30, transform="dct", min_lossy_numel=1024,
            jobs=1)

    def ggml_vector(p: Path) -> None:
        write_ggml_vector(p)

    gguf_file: dict = {}

    def gguf_vector(p: Path) -> None:
        gguf_file.update(write_gguf_vector(p))

    nonfinite: dict[str, bool] = {}

    def ggml_nonfinite(p: Path) -> None:
        nonfinite.update(write_ggml_nonfinite_vector(p))

    def updated(p: Path) -> None:
        llmc_format.save_file({"t": np.arange(12, dtype=np.float32).reshape(3, 4)}, p)
        append_metadata_update(p, metadata={"user": {"updated": True}})

    valid: dict[str, tuple[Callable[[Path], None], list[str]]] = {
        "v1-exact-basic": (exact_basic, []), "v1-lossy-vvc": (lossy_vvc, []),
        "v1-metadata-update": (updated, []), "v1-lossy-vvc-blockdct": (lossy_vvc_blockdct, []),
        "v1-ggml": (ggml_vector, []), **feature_vectors(),
        "v1-gguf": (gguf_vector, ["ggml Q2_K Q3_K Q5_K Q5_1 Q4_0 Q4_K Q6_K Q8_0 IQ4_NL BF16 F32",
                                  "ggml TQ1_0 TQ2_0 MXFP4 NVFP4",
                                  "ggml codebook types IQ1_S IQ1_M IQ2_XXS IQ2_XS IQ2_S "
                                  "IQ3_XXS IQ3_S", "digest.decoded of ggml tensors",
                                  "rowperm behind Q2_K", "GGUF layout record (rebuild)"]),
        "v1-ggml-nonfinite": (ggml_nonfinite, [
            "ggml Q8_0 Q4_1 Q4_K IQ2_XXS F16 with infinite and NaN scales",
            "default NaN from inf*0 and inf-inf", "one-NaN operations (normative bits)",
            "two-NaN operations (Q4_1 d and m): no xxh3, NaN mask and canonical digest",
            "digest rule: no digest.decoded for quantized values with a NaN"]),
        "v1-ggml-scales": (write_ggml_scales_vector, [
            "ggml NVFP4 with every scale byte 0x00-0xFF (0x7F is 0, 0xFF is 240)",
            "ggml Q8_K", "ggml empty tensor with rows ([3, 0]: rows_per_blob 0, no blob)"])}
    for name, (fn, features) in valid.items():
        if args.only not in (None, name):
            continue
        if (VECTORS / f"{name}.llmc").exists() and not args.force:
            print(f"keep {name}")
            continue
        if name == "v1-ggml-nonfinite":  # NaN keys, and no xxh3 where two NaNs met
            fn(VECTORS / f"{name}.llmc")
            (VECTORS / f"{name}.json").write_text(json.dumps(nonfinite_expected(
                VECTORS / f"{name}.llmc", nonfinite, features), indent=1, sort_keys=True) + "\n")
        else:
            make_valid(name, fn, features)
        if name == "v1-gguf":  # the GGUF file a reader rebuilds from the layout record
            j = VECTORS / f"{name}.json"
            expected = json.loads(j.read_text())
            expected["gguf"] = gguf_file
            j.write_text(json.dumps(expected, indent=1, sort_keys=True) + "\n")
        record_digest(VECTORS / f"{name}.llmc")
        print(f"wrote {name}")
    invalid = {
        "bad-future-major": (lambda d: _set_header(d, major=2),
                             expect_error("UnsupportedVersion")),
        "bad-required-feature": (lambda d: _set_header(d, required_features=1),
                                 expect_error("UnsupportedVersion")),
        "bad-truncated": (lambda d: d.__delitem__(slice(len(d) - 10, None)),
                          expect_error("Truncated")),
        "bad-blob-bitflip": (_flip_first_blob_byte,
                             expect_error("Checksum", "decode", tensor="layer.weight.f32")),
        **RULE_VECTORS,
    }
    for name, write in {"bad-diagscale-subnormal": write_bad_diagscale}.items():
        if args.only not in (None, name):
            continue
        if (VECTORS / f"{name}.llmc").exists() and not args.force:
            print(f"keep {name}")
            continue
        expect = write(VECTORS / f"{name}.llmc")
        (VECTORS / f"{name}.json").write_text(json.dumps(expect) + "\n")
        record_digest(VECTORS / f"{name}.llmc")
        print(f"wrote {name}")
    for name, (patch, error) in invalid.items():
        if args.only not in (None, name):
            continue
        if (VECTORS / f"{name}.llmc").exists() and not args.force:
            print(f"keep {name}")
            continue
        make_invalid(name, "v1-exact-basic", patch, error)
        record_digest(VECTORS / f"{name}.llmc")
        print(f"wrote {name}")


if __name__ == "__main__":
    main()
