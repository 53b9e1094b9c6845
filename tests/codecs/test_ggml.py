"""The ``ggml`` codec and its dequantizers: bit-exact blocks, values equal to gguf-py's.

The oracle for values is the gguf package's own numpy reference (``gguf.quants``), which
transformers uses to load GGUF files; for blocks, the bytes themselves.
"""

from __future__ import annotations

import struct

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmc_format.codecs.base import ArraySpec
from llmc_format.codecs.ggml import GgmlCodec
from llmc_format.codecs.ggml_types import GRID_TYPES, TYPES, dequantize
from llmc_format.codecs.registry import get_codec
from llmc_format.errors import CodecError

gguf = pytest.importorskip("gguf")
QUANTIZED = sorted(n for n, t in TYPES.items() if not t.plain)
#: types gguf-py quantizes itself (realistic blocks rather than random bytes)
GGUF_QUANTIZES = ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "TQ1_0", "TQ2_0", "MXFP4")


def random_blocks(name: str, n_blocks: int, seed: int = 0) -> np.ndarray:
    """Random blocks of type ``name`` (uint8, (n_blocks, type_size)); every 2-byte field
    holds a finite float16, so that scales are sane."""
    t = TYPES[name]
    rng = np.random.default_rng(seed)
    b = rng.integers(0, 256, size=(n_blocks, t.type_size), dtype=np.uint8)
    off = 0
    for n, w in t.fields:
        if w == 2:
            vals = rng.uniform(-0.05, 0.05, size=(n_blocks, n // 2)).astype(np.float16)
            b[:, off:off + n] = vals.view(np.uint8).reshape(n_blocks, n)
        off += n
    return b


def test_type_table_matches_ggml() -> None:
    for name, t in TYPES.items():
        q = gguf.GGMLQuantizationType[name]
        assert q.value == t.type_id
        assert gguf.GGML_QUANT_SIZES[q] == (t.block_size, t.type_size)


@pytest.mark.parametrize("name", QUANTIZED)
def test_dequantize_equals_gguf_py(name: str) -> None:
    """Our numpy dequantizer gives gguf-py's float32 values bit for bit (NaN included)."""
    t = TYPES[name]
    raw = random_blocks(name, 40).reshape(4, 10 * t.type_size)
    ours = dequantize(raw, t, (4, 10 * t.block_size))
    qtype = gguf.GGMLQuantizationType[name]
    try:
        ref = gguf.quants.dequantize(raw, qtype)
    except NotImplementedError:
        assert name == "Q8_K"  # gguf-py has no Q8_K: d (f32) times the int8 quants
        d = raw.reshape(-1, t.type_size)[:, :4].copy().view("<f4")
        q = raw.reshape(-1, t.type_size)[:, 4:260].copy().view(np.int8).astype(np.float32)
        with np.errstate(over="ignore"):
            ref = (q * d).reshape(4, -1)
    assert ours.dtype == np.float32 and ours.shape == ref.shape
    assert np.array_equal(ours, ref.astype(np.float32), equal_nan=True)


@pytest.mark.parametrize("name", GGUF_QUANTIZES)
def test_dequantize_quantized_weights(name: str) -> None:
    """Blocks gguf-py quantized from Gaussian weights decode to its values exactly."""
    qtype = gguf.GGMLQuantizationType[name]
    t = TYPES[name]
    w = np.random.default_rng(1).standard_normal((6, 4 * max(t.block_size, 256)), np.float32)
    q = gguf.quants.quantize(w, qtype)
    ours = dequantize(q, t, w.shape)
    assert ours.tobytes() == gguf.quants.dequantize(q, qtype).astype(np.float32).tobytes()
    assert np.abs(ours - w).mean() < np.abs(w).mean()  # they are the weights, roughly


def test_grid_types_are_the_gguf_delegated_ones() -> None:
    assert {"IQ2_XXS", "IQ3_S", "IQ1_M"} <= GRID_TYPES <= set(QUANTIZED)


@pytest.mark.parametrize("name", sorted(QUANTIZED))
def test_dequantize_no_blocks(name: str) -> None:
    """An empty row range is zero blocks: every type gives an empty array (gguf's grid
    dequantizers cannot reshape zero blocks; found by the v1-gguf vector's row ranges)."""
    t = TYPES[name]
    out = dequantize(np.empty(0, np.uint8), t, (0, t.block_size))
    assert out.shape == (0, t.block_size) and out.dtype == np.float32


def _encode(name: str, raw: np.ndarray, shape: tuple[int, ...], chunk_bytes: int = 1 << 20):
    t = TYPES[name]
    spec = ArraySpec(t.dtype, shape, "w")
    enc = GgmlCodec(name, chunk_bytes=chunk_bytes).encode_blocks(raw, spec)
    codec = get_codec(msgpack.unpackb(msgpack.packb(enc.config)))  # plain data survives msgpack
    return enc, codec, spec


@pytest.mark.parametrize("name", ["Q4_1", "Q8_0", "Q6_K", "IQ2_XS", "F16", "BF16", "F32", "I32"])
def test_blocks_round_trip_bit_exact_with_row_ranges(name: str) -> None:
    t = TYPES[name]
    rows, blocks_per_row = 13, 3
    if t.plain:
        raw = np.random.default_rng(2).integers(0, 256, (rows, blocks_per_row * t.type_size),
                                                dtype=np.uint8)
        if name in ("F16", "BF16", "F32"):  # finite values
            raw = np.random.default_rng(2).standard_normal((rows, blocks_per_row)).astype(
                {"F16": np.float16, "F32": np.float32}.get(name, np.float32))
            if name == "BF16":
                raw = (raw.view(np.uint32) >> 16).astype(np.uint16)
            raw = raw.view(np.uint8).reshape(rows, -1)
    else:
        raw = random_blocks(name, rows * blocks_per_row).reshape(rows, -1)
    shape = (rows, blocks_per_row * t.block_size)
    row_bytes = raw.shape[1]
    enc, codec, spec = _encode(name, raw, shape, chunk_bytes=4 * row_bytes)
    assert len(enc.blobs) == 4  # ceil(13 / 4) blobs of whole rows
    fetch = enc.blobs.__getitem__
    back = codec.decode_blocks(fetch, len(enc.blobs), spec)
    assert back.tobytes() == raw.tobytes()
    values = codec.decode(fetch, len(enc.blobs), spec)
    assert values.dtype == np.dtype(spec.np_dtype) and values.shape == shape
    assert values.tobytes() == dequantize(raw, t, shape).tobytes()
    fetched: list[int] = []

    def counting(i: int) -> bytes:
        fetched.append(i)
        return enc.blobs[i]

    part = codec.decode_blocks(counting, len(enc.blobs), spec, (5, 9))
    assert part.tobytes() == raw[5:9].tobytes()
    assert fetched == [1, 2]  # rows 4..7 and 8..11 only
    assert codec.decode(fetch, len(enc.blobs), spec, (5, 9)).tobytes() == \
        values[5:9].tobytes()


def test_scales_compress() -> None:
    """Smooth float16 scales code smaller than raw; the blob stays a few bytes over raw at
    worst for random quants."""
    rng = np.random.default_rng(3)
    w = (rng.standard_normal((64, 1024)) * np.linspace(0.5, 2, 64)[:, None]).astype(np.float32)
    q = gguf.quants.quantize(w, gguf.GGMLQuantizationType.Q8_0)
    enc, _, _ = _encode("Q8_0", q, w.shape)
    assert sum(len(b) for b in enc.blobs) < q.nbytes


def test_float_encode_only_for_plain_types() -> None:
    spec = ArraySpec("float32", (2, 32), "w")
    with pytest.raises(CodecError, match="source blocks"):
        GgmlCodec("Q4_0").encode(np.zeros((2, 32), np.float32), spec)
    a = np.arange(8, dtype=np.float16).reshape(2, 4)
    enc = GgmlCodec("F16").encode(a, ArraySpec("float16", (2, 4), "h"))
    codec = get_codec(enc.config)
    assert codec.decode(enc.blobs.__getitem__, len(enc.blobs), ArraySpec("float16", (2, 4))).tobytes() \
        == a.tobytes()


def test_rejects_bad_configs_and_specs() -> None:
    raw = random_blocks("Q4_1", 4).reshape(2, -1)
    enc, codec, spec = _encode("Q4_1", raw, (2, 64))
    fetch = enc.blobs.__getitem__
    with pytest.raises(CodecError, match="unknown ggml type"):
        get_codec({**enc.config, "type": "Q9_9"})
    with pytest.raises(CodecError, match="unknown keys"):
        get_codec({**enc.config, "extra": 1})
    with pytest.raises(CodecError, match="fields"):
        get_codec({**enc.config, "fields": [[2, 2], [17, 1]]}).decode(fetch, 1, spec)
    with pytest.raises(CodecError, match="layout"):
        get_codec({**enc.config, "layout": 2}).decode(fetch, 1, spec)
    with pytest.raises(CodecError, match="blobs stored"):
        codec.decode(fetch, 2, spec)
    with pytest.raises(CodecError, match="decodes to float32"):
        codec.decode(fetch, 1, ArraySpec("float16", (2, 64)))
    with pytest.raises(CodecError, match="multiple"):
        codec.decode(fetch, 1, ArraySpec("float32", (2, 48)))


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=200), st.integers(0, 3))
def test_hostile_blobs_raise_codec_error(data: bytes, mode: int) -> None:
    raw = random_blocks("Q4_1", 4).reshape(2, -1)
    enc, codec, spec = _encode("Q4_1", raw, (2, 64))
    blob = enc.blobs[0]
    if mode == 0:
        bad = data
    elif mode == 1:
        bad = blob[:len(blob) // 2] + data
    elif mode == 2:
        bad = struct.pack("<3I", 1 << 30, 0, 0) + blob[12:]
    else:
        bad = blob + data[:1] if data else blob[:-1]
    try:
        out = codec.decode_blocks(lambda i: bad, 1, spec)
    except CodecError:
        return
    assert out.shape == (2, raw.shape[1])  # a blob that decodes fills exactly the rows


def test_conformance_vector_blocks_and_values() -> None:
    """spec/vectors/v1-ggml: the stored blocks decode to the recorded digest, and their
    values (own dequantizers, rowperm) to gguf-py's dequantization of those blocks."""
    from pathlib import Path

    from llmc_format.codecs.rowperm import stored_to_rows
    from llmc_format.container import layout
    from llmc_format.container.reader import Reader
    from llmc_format.decode import read_native_blocks, read_tensor

    path = Path(__file__).resolve().parents[2] / "spec" / "vectors" / "v1-ggml.llmc"
    with Reader(path) as r:
        assert len(r.keys()) >= 6
        for name in r.keys():
            e = r.tensor(name)
            blocks = read_native_blocks(r, name)
            assert layout.checksum(blocks) == e.digest["source"], name
            t = e.pipeline[-1]["type"]
            ref = gguf.quants.dequantize(np.frombuffer(blocks, np.uint8).reshape(e.shape[0], -1),
                                         gguf.GGMLQuantizationType[t])
            ref = np.asarray(ref).reshape(e.shape)
            if e.pipeline[0]["id"] == "rowperm":
                ref = stored_to_rows(ref, e.pipeline[0]["heads"])
            got = read_tensor(r, name)
            assert got.astype(np.float32).tobytes() == ref.astype(np.float32).tobytes(), name


def test_the_codec_says_what_source_encoding_it_keeps() -> None:
    """pack, repack and ``unpack --format gguf`` ask the stored pipeline's final codec
    (``kept_encoding``), and inspect its ``label``, instead of comparing ids to "ggml"."""
    from llmc_format.codecs.stages import kept_encoding, stage_label

    stored = [{"id": "rowperm", "heads": 4},
              {"id": "ggml", "type": "Q4_1", "layout": 1, "fields": [], "rows_per_blob": 8}]
    assert kept_encoding(stored) == {"id": "ggml", "type": "Q4_1"}
    assert [stage_label(c) for c in stored] == ["rowperm", "ggml:Q4_1"]
    assert kept_encoding([{"id": "exact", "layout": 1, "chunk_elems": 8}]) is None
    assert kept_encoding([{"id": "no-such-codec"}]) is None and kept_encoding([]) is None
    assert stage_label({"id": "no-such-codec"}) == "no-such-codec"


def test_has_nan_scans_every_slice() -> None:
    from llmc_format.codecs.ggml_types import _NAN_SCAN, has_nan

    x = np.zeros(2 * _NAN_SCAN + 3, np.float32)
    assert not has_nan(x) and not has_nan(x[:0])
    x[-1] = np.nan  # in the last, partial slice
    assert has_nan(x) and has_nan(x.reshape(-1, 1))
    assert not has_nan(np.arange(10, dtype=np.int32))  # integers hold no NaN


def test_digest_portable_only_drops_quantized_values_with_nan() -> None:
    """FORMAT.md §7.6 digest rule, asked of the stored pipeline's final codec: a quantized
    ggml type with a NaN value is not portable (behind rowperm too); a plain ggml type or
    another codec with the same NaN is."""
    from llmc_format.codecs.stages import digest_portable

    nan = np.array([[1.0, np.nan]], np.float32)
    fine = np.array([[1.0, np.inf]], np.float32)
    q41 = {"id": "ggml", "type": "Q4_1", "layout": 1, "fields": [[2, 2]], "rows_per_blob": 1}
    assert not digest_portable([q41], nan)
    assert not digest_portable([{"id": "rowperm", "heads": 1}, q41], nan)
    assert digest_portable([q41], fine)
    assert digest_portable([dict(q41, type="F32")], nan)
    assert digest_portable([{"id": "exact", "layout": 1, "chunk_elems": 8}], nan)


def test_nvfp4_zero_scale_test_is_on_the_whole_byte() -> None:
    """FORMAT.md §7.6 (revision 1.7): s ∈ {0, 0x7F} is tested before the top bit is
    dropped, so 0xFF is 240 (not 0) and 0x80 is 0 through the formula; gguf-py agrees."""
    t = TYPES["NVFP4"]
    block = np.zeros((1, t.type_size), np.uint8)
    block[0, :4] = [0x7F, 0xFF, 0x80, 0xB8]  # 0xB8: exp (0xB8 >> 3) & 15 = 7, man 0
    block[0, 4:] = 0x11  # every nibble 1: E[1] = 1
    ours = dequantize(block, t, (1, t.block_size)).reshape(4, 16)
    assert ours[:, 0].tolist() == [0.0, 240.0, 0.0, 0.5]
    ref = gguf.quants.dequantize(block, gguf.GGMLQuantizationType.NVFP4)
    assert np.asarray(ref).reshape(-1).tobytes() == ours.reshape(-1).tobytes()


@pytest.mark.parametrize("name", ["F32", "Q4_0"])
def test_empty_tensor_with_rows_has_no_blobs(name: str) -> None:
    """§7.6 (revision 1.7): "empty" is numel = 0, so a [3, 0] tensor (three rows of no
    bytes) has rows_per_blob 0 and no blob; 1 or 3 rows per blob is Decode."""
    t = TYPES[name]
    spec = ArraySpec(t.dtype, (3, 0), "w")
    enc = GgmlCodec(name).encode_blocks(np.zeros((3, 0), np.uint8), spec)
    assert enc.config["rows_per_blob"] == 0 and enc.blobs == []
    codec = get_codec(msgpack.unpackb(msgpack.packb(enc.config)))
    assert codec.decode(enc.blobs.__getitem__, 0, spec).shape == (3, 0)
    for r, n in ((1, 3), (3, 1), (0, 1)):
        with pytest.raises(CodecError):
            get_codec({**enc.config, "rows_per_blob": r}).decode(lambda i: b"", n, spec)
