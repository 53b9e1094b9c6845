"""The diagscale stage: exact decoding by its formula, float16 vectors, rows, errors, packing."""

from __future__ import annotations

from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import llmc_format
from llmc_format.codecs.base import ArraySpec
from llmc_format.codecs.diagscale import DiagScaleCodec, DiagScales, matrix_shape
from llmc_format.codecs.registry import get_codec
from llmc_format.codecs.stages import build, decode_encoded, decode_tensor, encode_tensor
from llmc_format.container.reader import Reader
from llmc_format.errors import CodecError, UsageError
from llmc_format.pipeline.policy import Policy

F32_MAX = np.float32(np.finfo(np.float32).max)
CLAMP = {"float32": F32_MAX, "float64": F32_MAX, "float16": np.float32(65504),
         "bfloat16": np.float32(float.fromhex("0x1.fep127"))}
NP = {"float32": np.float32, "float64": np.float64, "float16": np.float16,
      "bfloat16": ml_dtypes.bfloat16}


def formula(y: np.ndarray, c: np.ndarray | None, r: np.ndarray | None, dtype: str) -> np.ndarray:
    """The normative decoding, element by element in Python scalars (spec/FORMAT.md §7.9):
    t = fl32(y·C_j), u = fl32(t·R_i), clamp, convert. Independent of the codec's numpy."""
    rows, cols = y.shape
    out = np.empty((rows, cols), dtype=NP[dtype])
    m = CLAMP[dtype]
    with np.errstate(over="ignore"):  # overflow to inf is the rule; the clamp follows
        _formula_loop(y, c, r, out, m, NP[dtype])
    return out


def _formula_loop(y: np.ndarray, c: np.ndarray | None, r: np.ndarray | None, out: np.ndarray,
                  m: np.float32, to: type) -> None:
    rows, cols = y.shape
    for i in range(rows):
        for j in range(cols):
            t = np.float32(y[i, j])
            if c is not None:
                t = np.float32(t * np.float32(c[j]))
            if r is not None:
                t = np.float32(t * np.float32(r[i]))
            out[i, j] = to(min(max(t, -m), m))


def _stage(shape: tuple[int, ...], c: np.ndarray | None, r: np.ndarray | None,
           dtype: str = "float32", seed: int = 0) -> tuple[np.ndarray, DiagScaleCodec, list[bytes],
                                                             np.ndarray, ArraySpec]:
    """Encode a random tensor with the stage alone: (x, stored codec, blobs, y, spec)."""
    x = (np.random.default_rng(seed).standard_normal(shape) * 0.05).astype(NP[dtype])
    spec = ArraySpec(dtype, shape, "t")
    enc = DiagScaleCodec(col_scale=c, row_scale=r).encode(x, spec)
    stored = get_codec(enc.config)
    assert isinstance(stored, DiagScaleCodec)
    return x, stored, enc.blobs, enc.array, spec


positive16 = st.floats(min_value=2.0**-14, max_value=60000.0, allow_nan=False,
                       allow_infinity=False)


@settings(max_examples=60, deadline=None)
@given(rows=st.integers(1, 9), cols=st.integers(1, 9), data=st.data(),
       which=st.sampled_from(["cols", "rows", "both"]))
def test_stage_reconstructs_by_the_formula(rows: int, cols: int, data: st.DataObject,
                                           which: str) -> None:
    """decode(y) is exactly fl32(fl32(y·c)·r) clamped, for any finite y the next stage
    returns (here: hypothesis' own values, also huge ones that overflow), and the encoder's
    y is float32(x / (c16·r16)) computed in float64."""
    c = np.array(data.draw(st.lists(positive16, min_size=cols, max_size=cols))) \
        if which != "rows" else None
    r = np.array(data.draw(st.lists(positive16, min_size=rows, max_size=rows))) \
        if which != "cols" else None
    x, codec, blobs, y, spec = _stage((rows, cols), c, r)
    c16 = None if c is None else c.astype(np.float16)
    r16 = None if r is None else r.astype(np.float16)
    want_y = x.astype(np.float64)
    if c16 is not None:
        want_y = want_y / c16.astype(np.float64)[None, :] if r16 is None else want_y
    if r16 is not None:
        d = r16.astype(np.float64)[:, None] * (1.0 if c16 is None else c16.astype(np.float64)[None, :])
        want_y = x.astype(np.float64) / d
    assert y.dtype == np.float32 and np.array_equal(y, want_y.astype(np.float32))
    # the stored vectors are the float16 roundings, little-endian
    assert blobs == [v.astype("<f2").tobytes() for v in (c16, r16) if v is not None]
    # decoding arbitrary finite float32 inputs (not only the encoder's): the formula, exactly
    inner = data.draw(hnp.arrays(np.float32, (rows, cols), elements=st.floats(
        width=32, allow_nan=False, allow_infinity=False)))
    got = codec.decode(inner.copy(), blobs.__getitem__, len(blobs), spec)
    assert got.tobytes() == formula(inner, c16, r16, "float32").tobytes()
    back = codec.decode(y, blobs.__getitem__, len(blobs), spec)  # and it undoes the encoder
    assert np.allclose(back, x, rtol=2e-7 * 4, atol=0)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float64"])
def test_other_dtypes_clamp_and_convert(dtype: str) -> None:
    """The last steps are affine's: clamp to the dtype's largest value, round to it."""
    c = np.array([1.0, 2.0, 1000.0])
    r = np.array([0.5, 3.0])
    _, codec, blobs, _, spec = _stage((2, 3), c, r, dtype)
    inner = np.array([[1.0, 1e3, 1e4], [-7e4, 1.2345678, -3e38]], dtype=np.float32)
    got = codec.decode(inner.copy(), blobs.__getitem__, 2, spec)
    assert got.dtype == NP[dtype]
    assert got.tobytes() == formula(inner, c.astype(np.float16), r.astype(np.float16), dtype).tobytes()
    if dtype == "float16":
        assert got[1, 2] == -65504 and got[0, 2] == 65504  # clamped, not inf


def test_float16_rounding_is_what_decoding_multiplies_by() -> None:
    c = np.full(4, 1 / 3)  # not a binary16 value
    x, codec, blobs, y, spec = _stage((3, 4), c, None)
    c16 = np.float16(1 / 3)
    assert float(c16) != 1 / 3
    assert np.frombuffer(blobs[0], "<f2").tolist() == [float(c16)] * 4
    assert np.array_equal(y, (x.astype(np.float64) / float(c16)).astype(np.float32))
    cols, rows = codec.vectors(blobs.__getitem__, 1, spec)
    assert rows is None and cols.dtype == np.float32 and set(cols.tolist()) == {float(c16)}


@pytest.mark.parametrize("bad", [0.0, -1.0, 1e-6, 1e6, float("nan"), float("inf")])
def test_encoder_refuses_vectors_not_positive_normal_binary16(bad: float) -> None:
    c = np.ones(4)
    c[2] = bad
    with pytest.raises(CodecError, match=r"col_scale\[2\]"):
        _stage((3, 4), c, None)


def test_encoder_refuses_wrong_lengths_and_missing_vectors() -> None:
    with pytest.raises(CodecError, match="expected \\[4\\]"):
        _stage((3, 4), np.ones(5), None)
    with pytest.raises(CodecError, match="expected \\[3\\]"):
        _stage((3, 4), None, np.ones(4))
    spec = ArraySpec("float32", (3, 4), "t")
    with pytest.raises(CodecError, match="no col_scale"):
        DiagScaleCodec(cols=True, rows=False).encode(np.ones((3, 4), np.float32), spec)
    with pytest.raises(CodecError, match="at least one"):
        DiagScaleCodec(cols=False, rows=False)
    with pytest.raises(CodecError, match="not finite"):  # x / tiny overflows float32
        DiagScaleCodec(col_scale=np.full(4, 2.0**-14)).encode(
            np.full((3, 4), 3e38, np.float32), spec)
    with pytest.raises(CodecError, match="takes float16"):
        DiagScaleCodec(col_scale=np.ones(4)).encode(np.ones((3, 4), np.int32),
                                                     ArraySpec("int32", (3, 4), "t"))


def _f16_bits(bits: int) -> bytes:
    return int(bits).to_bytes(2, "little")


@pytest.mark.parametrize("entry, why", [
    (_f16_bits(0x7E00), "NaN"), (_f16_bits(0x0000), "zero"), (_f16_bits(0x8000), "-0"),
    (_f16_bits(0xBC00), "negative"), (_f16_bits(0x0001), "subnormal"),
    (_f16_bits(0x03FF), "largest subnormal"), (_f16_bits(0x7C00), "inf"),
])
def test_decoder_refuses_bad_vector_entries(entry: bytes, why: str) -> None:
    _, codec, blobs, y, spec = _stage((3, 4), np.ones(4), np.ones(3))
    for k in (0, 1):
        bad = list(blobs)
        bad[k] = blobs[k][:2] + entry + blobs[k][4:]
        with pytest.raises(CodecError, match="not a finite, positive, normal"):
            codec.decode(y.copy(), bad.__getitem__, 2, spec)
    ok = _f16_bits(0x0400) + _f16_bits(0x7BFF)  # smallest normal, largest finite: accepted
    codec.decode(y.copy(), [ok + ok, blobs[1]].__getitem__, 2, spec)


def test_decoder_refuses_wrong_blob_lengths_counts_configs_and_nan() -> None:
    _, codec, blobs, y, spec = _stage((3, 4), np.ones(4), np.ones(3))
    for bad in ([blobs[0][:-2], blobs[1]], [blobs[0], blobs[1] + b"\0\x3c"], [blobs[1], blobs[0]]):
        with pytest.raises(CodecError, match="bytes, expected"):
            codec.decode(y.copy(), bad.__getitem__, 2, spec)
    with pytest.raises(CodecError, match="needs 2 blob"):
        codec.decode(y.copy(), blobs.__getitem__, 1, spec)
    nan = y.copy()
    nan[1, 2] = np.nan
    with pytest.raises(CodecError, match="NaN"):
        codec.decode(nan, blobs.__getitem__, 2, spec)
    inf = y.copy()
    inf[0, 0] = -np.inf  # infinities clamp (the dtype's largest value), like affine's
    assert codec.decode(inf, blobs.__getitem__, 2, spec)[0, 0] == -F32_MAX
    # stored configs are closed: both keys, nothing else (encode-only vectors included)
    for config in ({"id": "diagscale", "cols": True},
                   {"id": "diagscale", "cols": True, "rows": False, "col_scale": [1.0]},
                   {"id": "diagscale", "cols": 1, "rows": False},
                   {"id": "diagscale", "cols": False, "rows": False}):
        with pytest.raises(CodecError):
            build([config, {"id": "exact", "layout": 1, "chunk_elems": 12}], "t", stored=True)
    with pytest.raises(CodecError, match="elements"):
        codec.resolve(ArraySpec("float32", (0, 4), "t"))


@pytest.mark.parametrize("shape", [(), (7,), (6, 5), (4, 3, 5)])
def test_shapes_rows_and_exact_inner_stage(shape: tuple[int, ...]) -> None:
    """0-d, 1-D (its rows are its elements: R = n, C = 1), 2-D and rank 3 through
    [diagscale, exact]: whole decode by the formula, every row range = the whole sliced."""
    n_rows, n_cols = matrix_shape(shape)
    rng = np.random.default_rng(3)
    c, r = rng.uniform(0.1, 10, n_cols), rng.uniform(0.1, 10, n_rows)
    x = rng.standard_normal(shape).astype(np.float32)
    spec = ArraySpec("float32", shape, "t")
    enc = encode_tensor(x, spec, [{"id": "diagscale", "col_scale": c, "row_scale": r},
                                  {"id": "exact"}])
    assert enc.pipeline[0] == {"id": "diagscale", "cols": True, "rows": True}
    stage1 = [b for s, b in enc.blobs if s == 1]
    stage0 = [b for s, b in enc.blobs if s == 0]
    counts = [len(stage0), len(stage1)]

    def fetch(s: int, i: int) -> bytes:
        return (stage0, stage1)[s][i]

    whole = decode_tensor(enc.pipeline, spec, counts, fetch)
    inner = decode_tensor(enc.pipeline[1:], spec, [len(stage1)], lambda s, i: stage1[i])
    want = formula(inner.reshape(n_rows, n_cols), c.astype(np.float16), r.astype(np.float16),
                   "float32").reshape(shape)
    assert whole.shape == shape and whole.tobytes() == want.tobytes()
    assert np.allclose(whole, x, rtol=1e-6, atol=0)
    for a in range(n_rows + 1):
        for b in range(a, n_rows + 1):
            part = decode_tensor(enc.pipeline, spec, counts, fetch, rows=(a, b))
            assert part.tobytes() == whole.reshape(n_rows, *shape[1:])[a:b].tobytes()


def _video_pipeline(quant: str, codec: str) -> list[dict]:
    video = {"id": codec, "qp": 27, "preset": "faster" if codec == "vvc" else "ultrafast"}
    return [{"id": "blockdct"} if quant == "blockdct" else {"id": "affine"}, video]


@pytest.mark.parametrize("quant, codec", [("blockdct", "vvc"), ("affine", "hevc")])
def test_real_codecs_whole_and_by_rows(quant: str, codec: str) -> None:
    """[diagscale, affine|blockdct, hevc|vvc]: the decode is the formula applied to what the
    rest of the pipeline decodes, row ranges equal the whole; the multipliers move error
    from the columns with small c to the others, as intended."""
    shape = (96, 160)
    rng = np.random.default_rng(5)
    x = (rng.standard_normal(shape) * 0.02).astype(np.float32)
    c = np.where(np.arange(160) < 80, 0.25, 4.0)  # left half 16x finer in weight units
    r = rng.uniform(0.5, 2.0, 96)
    spec = ArraySpec("float32", shape, "w")
    pipe = [{"id": "diagscale", "col_scale": c, "row_scale": r}, *_video_pipeline(quant, codec)]
    enc = encode_tensor(x, spec, pipe)
    assert [p["id"] for p in enc.pipeline] == ["diagscale", quant, codec]
    by: dict[int, list[bytes]] = {}
    for s, b in enc.blobs:
        by.setdefault(s, []).append(b)
    counts = [len(by.get(i, [])) for i in range(3)]

    def fetch(s: int, i: int) -> bytes:
        return by[s][i]

    whole = decode_tensor(enc.pipeline, spec, counts, fetch)
    inner = decode_tensor(enc.pipeline[1:], spec, counts[1:], lambda s, i: by[s + 1][i])
    want = formula(inner, c.astype(np.float16), r.astype(np.float16), "float32")
    assert whole.tobytes() == want.tobytes()
    assert whole.tobytes() == decode_encoded(enc, spec).tobytes()
    for a, b in ((0, 96), (5, 40), (32, 64), (95, 96), (10, 10)):
        part = decode_tensor(enc.pipeline, spec, counts, fetch, rows=(a, b))
        assert part.tobytes() == whole[a:b].tobytes()
    err = (whole.astype(np.float64) - x) ** 2
    assert err[:, :80].mean() * 20 < err[:, 80:].mean()  # ~256x in theory


def test_policy_and_pack_build_the_pipeline(tmp_path: Path) -> None:
    """The pack hook: ``diagscale={name: (col_scale, row_scale)}`` puts the stage in front of
    the named lossy tensors' quantization (fixed QP and target packs); exact ones ignore it."""
    rng = np.random.default_rng(7)
    tensors = {"a.weight": (rng.standard_normal((64, 256)) * 0.02).astype(np.float32),
               "b.weight": (rng.standard_normal((64, 256)) * 0.02).astype(np.float32),
               "norm.weight": np.ones(256, np.float32)}
    c = rng.uniform(0.5, 2.0, 256)
    scales = {"a.weight": (c, None), "norm.weight": (None, np.ones(256))}
    p = Policy(codec="vvc", min_lossy_numel=1024, diagscale=scales)
    assert [s["id"] for s in p.pipeline("a.weight", "float32", (64, 256))] == \
        ["diagscale", "affine", "vvc"]
    assert [s["id"] for s in p.pipeline("b.weight", "float32", (64, 256))] == ["affine", "vvc"]
    assert p.pipeline("norm.weight", "float32", (256,)) == [{"id": "exact"}]
    out = llmc_format.save_file(tensors, tmp_path / "q.llmc", codec="hevc", qp=30,
                                preset="ultrafast", min_lossy_numel=1024, diagscale=scales)
    with Reader(out) as rd:
        assert [s["id"] for s in rd.tensor("a.weight").pipeline] == ["diagscale", "affine", "hevc"]
        assert rd.tensor("a.weight").quant["diagscale"]["col_scale_max"] <= 2.0
        assert rd.tensor("a.weight").quant["bits"] == 10  # the affine stage's facts on top
        assert [s["id"] for s in rd.tensor("b.weight").pipeline] == ["affine", "hevc"]
    out = llmc_format.save_file(tensors, tmp_path / "t.llmc", codec="vvc", bpw=3.0,
                                preset="faster", min_lossy_numel=1024, diagscale=scales, jobs=1,
                                weighting="nmse")
    with Reader(out) as rd:
        assert [s["id"] for s in rd.tensor("a.weight").pipeline] == ["diagscale", "blockdct", "vvc"]
    with llmc_format.safe_open(out) as f:
        back = f.get_tensor("a.weight")
    assert back.shape == (64, 256) and np.corrcoef(back.ravel(), tensors["a.weight"].ravel())[0, 1] > 0.9
    with pytest.raises(UsageError, match="no tensor named"):
        llmc_format.save_file(tensors, tmp_path / "x.llmc", codec="hevc", qp=30,
                              diagscale={"c.weight": (c, None)})
    with pytest.raises(UsageError, match="has 256 entries"):
        llmc_format.save_file(tensors, tmp_path / "x.llmc", codec="hevc", qp=30,
                              diagscale={"a.weight": (None, c)})
    with pytest.raises(UsageError, match="positive normal binary16"):
        llmc_format.save_file(tensors, tmp_path / "x.llmc", codec="hevc", qp=30,
                              diagscale={"a.weight": (-c, None)})
    assert not (tmp_path / "x.llmc").exists()


def test_diagscales_repr_tells_vectors_apart() -> None:
    a, b = DiagScales(np.ones(8)), DiagScales(np.ones(8) * 2)
    assert repr(a) != repr(b) and repr(a) == repr(DiagScales(np.ones(8)))
    assert repr(a) != repr(DiagScales(None, np.ones(8)))
    assert a.cols is not None and not a.cols.flags.writeable
