"""The blockdct stage: exact integer decoding, row ranges, encoder rule, and with real VVC."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmc_format.codecs.base import ArraySpec
from llmc_format.codecs.stages import decode_tensor, encode_tensor
from llmc_format.errors import CodecError
from llmc_format.quant.blockdct import BlockDctCodec, dct_matrix
from llmc_format.rd.sample import sample_blocks


def _encode(x: np.ndarray, **kw: int) -> tuple[BlockDctCodec, np.ndarray, ArraySpec]:
    spec = ArraySpec({np.float32: "float32", np.float64: "float64"}[x.dtype.type], x.shape, "t")
    enc = BlockDctCodec(**kw).encode(x, spec)
    done = BlockDctCodec.from_config(enc.config)
    assert isinstance(done, BlockDctCodec)
    return done, enc.array, spec


def test_matrix_is_a_scaled_orthonormal_dct() -> None:
    m = dct_matrix(32, 14).astype(np.float64) / 2**14
    assert np.abs(m @ m.T - np.eye(32)).max() < 5e-4
    assert np.allclose(m[0], 1 / np.sqrt(32), atol=1e-4)  # DC row: the block mean
    assert dct_matrix(32, 14).dtype == np.int64


def test_decoding_is_exact_integer_arithmetic() -> None:
    """Step 2 through float64 BLAS equals Python's exact integers on extreme codes."""
    from llmc_format.quant.blockdct import _blocks_transform

    m = dct_matrix(32, 14)
    rng = np.random.default_rng(1)
    c = rng.choice([-512, 511], size=(32, 64)).astype(np.int64)  # the largest magnitudes
    got = _blocks_transform(c.astype(np.float64), m.astype(np.float64))
    for j in range(2):
        block = [[int(v) for v in row] for row in c[:, 32 * j:32 * (j + 1)]]
        mi = [[int(v) for v in row] for row in m]
        left = [[sum(mi[i][k] * block[k][n] for k in range(32)) for n in range(32)] for i in range(32)]
        exact = [[sum(left[i][k] * mi[n][k] for k in range(32)) for n in range(32)] for i in range(32)]
        assert np.array_equal(got[:, 32 * j:32 * (j + 1)], np.array(exact, dtype=np.float64))


@pytest.mark.parametrize("shape", [(64, 96), (70, 100), (20, 50), (128, 4, 8), (33, 31)])
def test_codes_alone_round_trip_at_grid_precision(shape: tuple[int, ...]) -> None:
    x = (np.random.default_rng(0).standard_t(5, size=shape) * 0.02).astype(np.float32)
    codec, codes, spec = _encode(x)
    assert codes.dtype == np.uint16 and codes.shape == shape and int(codes.max()) < 1024
    back = codec.decode(codes, lambda i: b"", 0, spec)
    assert back.dtype == np.float32 and back.shape == shape
    err = back.astype(np.float64) - x
    snr = 10 * np.log10(np.sum(x.astype(np.float64) ** 2) / np.sum(err**2))
    assert snr > 45  # a 10-bit grid over a spread-out range


@settings(max_examples=30, deadline=None)
@given(rows=st.integers(1, 100), cols=st.integers(1, 80), data=st.data())
def test_any_row_range_decodes_as_the_whole_tensor_does(rows: int, cols: int, data: st.DataObject) -> None:
    x = np.random.default_rng(rows * 131 + cols).standard_normal((rows, cols)).astype(np.float32)
    codec, codes, spec = _encode(x)
    full = codec.decode(codes, lambda i: b"", 0, spec)
    a = data.draw(st.integers(0, rows))
    b = data.draw(st.integers(a, rows))
    have = codec.input_rows((a, b), spec)
    assert have is not None and have[0] <= a and b <= have[1] <= rows
    part = codec.decode(codes[have[0]:have[1]], lambda i: b"", 0, spec, (a, b))
    assert np.array_equal(part, full[a:b])


def test_input_rows_widen_to_whole_bands_only_in_the_core() -> None:
    spec = ArraySpec("float32", (70, 64), "t")  # core rows 0..63, edge rows 64..69
    c = BlockDctCodec()
    assert c.input_rows((3, 40), spec) == (0, 64)
    assert c.input_rows((32, 64), spec) == (32, 64)
    assert c.input_rows((60, 66), spec) == (32, 66)
    assert c.input_rows((65, 67), spec) == (65, 67)
    assert c.input_rows(None, spec) is None


def test_sample_blocks_align_to_bands() -> None:
    for rows, cols in ((1536, 576), (576, 576), (70, 2000), (4096, 4096)):
        blocks = sample_blocks(rows, cols, align=32)
        assert blocks and all(a % 32 == 0 and (b % 32 == 0 or b == rows) for a, b in blocks)
        assert all(b0 < a1 for (_, b0), (a1, _) in itertools.pairwise(blocks))
    assert sample_blocks(1536, 576) == sample_blocks(1536, 576, align=1)


def test_constant_and_bfloat16_tensors() -> None:
    from llmc_format import dtypes

    codec, codes, spec = _encode(np.full((64, 64), 0.25, dtype=np.float32))
    assert np.all(codec.decode(codes, lambda i: b"", 0, spec) == np.float32(0.25))
    bf16 = dtypes.to_numpy("bfloat16")
    x = (np.random.default_rng(2).standard_normal((64, 64)) * 0.1).astype(bf16)
    spec = ArraySpec("bfloat16", x.shape, "t")
    enc = BlockDctCodec().encode(x, spec)
    back = BlockDctCodec.from_config(enc.config).decode(enc.array, lambda i: b"", 0, spec)
    assert back.dtype == bf16 and np.abs(back.astype(np.float32) - x.astype(np.float32)).max() < 0.02


@pytest.mark.parametrize("config", [
    {"block": 24}, {"bits": 0}, {"bits": 17}, {"precision": 7}, {"scale": 1.0},
    {"scale": -1.0, "offset": 0.0}, {"scale": float("nan"), "offset": 0.0},
    {"scale": 1.0, "offset": float("inf")}, {"bits": 16, "block": 64, "precision": 16},
    {"scale": 0.1, "offset": 0.0},  # not a binary32 value
])
def test_bad_configs_are_codec_errors(config: dict[str, float]) -> None:
    with pytest.raises(CodecError):
        BlockDctCodec(**config)  # type: ignore[arg-type]


def test_bad_inputs_are_codec_errors() -> None:
    with pytest.raises(CodecError, match="2 dimensions"):
        BlockDctCodec().encode(np.zeros(64, np.float32), ArraySpec("float32", (64,), "v"))
    x = np.zeros((32, 32), np.float32)
    x[3, 4] = np.nan
    with pytest.raises(CodecError, match="non-finite"):
        BlockDctCodec().encode(x, ArraySpec("float32", x.shape, "n"))
    codec, codes, spec = _encode(np.ones((32, 32), np.float32))
    with pytest.raises(CodecError, match="exceeds"):
        codec.decode(np.full((32, 32), 1024, np.uint16), lambda i: b"", 0, spec)
    with pytest.raises(CodecError, match="lacks scale"):
        BlockDctCodec().decode(codes, lambda i: b"", 0, spec)


def test_through_real_vvc_whole_and_by_rows() -> None:
    """[blockdct, vvc] with the FFmpeg encoder and PyAV decoder; row reads fetch bands."""
    rng = np.random.default_rng(3)
    x = (rng.laplace(size=(96, 160)) * 0.02).astype(np.float32)
    spec = ArraySpec("float32", x.shape, "w")
    pipe = [{"id": "blockdct"}, {"id": "vvc", "qp": 22}]
    enc = encode_tensor(x, spec, pipe)
    by_stage: dict[int, list[bytes]] = {0: [], 1: []}
    for s, b in enc.blobs:
        by_stage[s].append(b)
    counts = [len(by_stage[0]), len(by_stage[1])]
    full = decode_tensor(enc.pipeline, spec, counts, lambda s, i: by_stage[s][i])
    err = full.astype(np.float64) - x
    snr = 10 * np.log10(np.sum(x.astype(np.float64) ** 2) / np.sum(err**2))
    assert 10 < snr < 40
    for rows in ((0, 1), (31, 65), (90, 96)):
        part = decode_tensor(enc.pipeline, spec, counts, lambda s, i: by_stage[s][i], rows)
        assert np.array_equal(part, full[rows[0]:rows[1]])


def test_target_pack_with_dct_transform_verifies(tmp_path: Path) -> None:
    from llmc_format.container.reader import Reader
    from llmc_format.io.memory import MemorySource
    from llmc_format.pipeline.policy import Policy
    from llmc_format.pipeline.target import Target, pack_to_target
    from llmc_format.pipeline.verify import verify

    rng = np.random.default_rng(4)
    model = {"a.weight": (rng.standard_normal((128, 256)) * 0.02).astype(np.float32),
             "b.weight": (rng.standard_t(3, size=(96, 256)) * 0.05).astype(np.float32)}
    out = tmp_path / "d.llmc"
    policy = Policy(codec="vvc", min_lossy_numel=1024, transform="dct")
    pack_to_target(MemorySource(model), out, Target.parse(bpw=3.0), policy=policy, jobs=2,
                   weighting="mse")
    with Reader(out) as r:
        for name in model:
            e = r.tensor(name)
            assert [c["id"] for c in e.pipeline] == ["blockdct", "vvc"]
            assert e.quant["transform"] == "dct32" and e.rd["snr_db"] > 5
    src = tmp_path / "m.safetensors"
    from safetensors.numpy import save_file

    save_file(model, str(src))
    report = verify(out, against=src)
    assert report.ok, report
    assert all(t.snr_db_measured is not None and t.snr_db_measured > 5 for t in report.tensors)


def test_dct_policy_keeps_affine_for_a_vector_named_lossy() -> None:
    from llmc_format.pipeline.policy import Policy

    p = Policy(codec="vvc", transform="dct", lossy_patterns=("norm*",))
    assert [c["id"] for c in p.pipeline("norm.weight", "float32", (4096,))] == ["affine", "vvc"]
    assert [c["id"] for c in p.pipeline("a.weight", "float32", (512, 512))] == ["blockdct", "vvc"]
    assert p.per_tensor_scale and not Policy(codec="vvc").per_tensor_scale
