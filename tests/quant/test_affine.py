"""Affine stage: configs, errors, edge cases, recorded info and a real model weight."""

from __future__ import annotations

import math
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

from llmc_format.codecs.base import ArraySpec
from llmc_format.codecs.registry import get_codec, get_codec_class
from llmc_format.errors import CodecError
from llmc_format.metrics import error_energy, snr_db
from llmc_format.quant.affine import AffineCodec, quantize


def roundtrip(x: np.ndarray, dtype: str, name: str = "w", **config):
    spec = ArraySpec(dtype, tuple(x.shape), name)
    enc = AffineCodec(**config).encode(x, spec)
    codec = get_codec(enc.config)
    y = codec.decode(enc.array, lambda i: enc.blobs[i], len(enc.blobs), spec)
    return enc, codec, spec, y


def test_registered_under_affine() -> None:
    assert get_codec_class("affine") is AffineCodec
    codec = AffineCodec(bits=8, granularity="group", group_size=32)
    assert get_codec(codec.get_config()) == codec
    assert codec.get_config() == {
        "id": "affine", "bits": 8, "granularity": "group", "group_size": 32,
        "clip": "none", "clip_bits": 8.0, "param_dtype": "auto",
    }


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("bits", 0), ("bits", 17), ("bits", "10"), ("bits", True), ("bits", 10.0),
        ("granularity", "column"), ("granularity", 1), ("group_size", 0),
        ("group_size", 2.5), ("group_size", None), ("clip", "max"), ("clip", None),
        ("clip_bits", 0.5), ("clip_bits", "4"), ("clip_bits", math.nan), ("clip_bits", False),
        ("param_dtype", "float64"), ("param_dtype", None),
    ],
)
def test_bad_config_from_file_is_codec_error(key: str, value: object) -> None:
    with pytest.raises(CodecError, match=key):
        get_codec({"id": "affine", key: value})


def test_unknown_config_key_is_codec_error() -> None:
    with pytest.raises(CodecError, match="affine"):
        get_codec({"id": "affine", "bitz": 10})


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_input_is_refused_naming_the_tensor(bad: float) -> None:
    x = np.ones((3, 4), dtype=np.float32)
    x[1, 2] = bad
    with pytest.raises(CodecError, match=r"'layers\.0\.w'.*\[1, 2\]"):
        roundtrip(x, "float32", name="layers.0.w")


@pytest.mark.parametrize("dtype", ["int32", "float8_e4m3fn", "uint16"])
def test_non_float_or_float8_input_is_refused(dtype: str) -> None:
    spec = ArraySpec(dtype, (2, 2), "w")
    with pytest.raises(CodecError, match="'w'"):
        AffineCodec().resolve(spec)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
@pytest.mark.parametrize("value", [0.0, 0.5, -3.0, 0.1, 1e-3])
def test_constant_tensors(dtype: str, value: float) -> None:
    x = np.full((4, 10), value).astype(np.dtype(ml_dtypes.bfloat16) if dtype == "bfloat16" else dtype)
    for gran in ("row", "group", "tensor"):
        _, _, _, y = roundtrip(x, dtype, granularity=gran, group_size=3)
        assert y.dtype == x.dtype
        err = np.abs(y.astype(np.float64) - x.astype(np.float64))
        if value in (0.0, 0.5, -3.0):  # exactly representable params: exact
            assert err.max() == 0.0
        else:  # offset rounded down by < 1 float16 ulp, step tiny
            assert err.max() <= abs(value) * 2**-10


def test_empty_and_zero_column_tensors() -> None:
    for shape in [(0, 5), (4, 0), (0,), (2, 0, 3)]:
        x = np.zeros(shape, np.float32)
        enc, _, _, y = roundtrip(x, "float32")
        assert y.shape == shape and enc.array.shape == shape
        assert enc.info["grid_snr_db"] is None


def test_zero_d_tensor_and_rows_refused() -> None:
    x = np.array(1.25, np.float32)
    enc, codec, spec, y = roundtrip(x, "float32")
    assert y.shape == () and y == np.float32(1.25)
    with pytest.raises(CodecError, match="0-d"):
        codec.decode(enc.array, lambda i: enc.blobs[i], 1, spec, rows=(0, 1))


def _tensor(seed: int = 0, shape: tuple[int, ...] = (8, 40)) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def test_malformed_params_blob_is_codec_error_naming_tensor() -> None:
    x = _tensor()
    enc, codec, spec, _ = roundtrip(x, "float32", name="blk.3.attn_q")
    blob = enc.blobs[0]
    assert len(blob) == 8 * 4  # 8 rows × (scale, offset) × 2-byte params
    for bad in (blob[:-1], blob + b"\0", b""):
        with pytest.raises(CodecError, match=r"'blk\.3\.attn_q'.*params blob is \d+ bytes"):
            codec.decode(enc.array, lambda i, b=bad: b, 1, spec)
    dt = np.dtype(codec.params["param_dtype"] if codec.params["param_dtype"] != "bfloat16"
                  else ml_dtypes.bfloat16)
    vals = np.frombuffer(blob, dt).copy()
    vals[3] = np.nan
    with pytest.raises(CodecError, match="non-finite"):
        codec.decode(enc.array, lambda i: vals.tobytes(), 1, spec)
    vals = np.frombuffer(blob, dt).copy()
    vals[0] = -vals[0]  # a scale
    with pytest.raises(CodecError, match="negative scale"):
        codec.decode(enc.array, lambda i: vals.tobytes(), 1, spec)


def test_decode_rejects_lying_inputs() -> None:
    x = _tensor()
    enc, codec, spec, _ = roundtrip(x, "float32", bits=6)
    fetch = lambda i: enc.blobs[i]  # noqa: E731
    with pytest.raises(CodecError, match="1 params blob"):
        codec.decode(enc.array, fetch, 2, spec)
    bad = enc.array.copy()
    bad[0, 0] = 64
    with pytest.raises(CodecError, match="code 64 exceeds 63"):
        codec.decode(bad, fetch, 1, spec)
    with pytest.raises(CodecError, match="codes"):
        codec.decode(enc.array.astype(np.int32), fetch, 1, spec)
    with pytest.raises(CodecError, match="codes"):
        codec.decode(enc.array[:3], fetch, 1, spec, rows=(0, 4))
    with pytest.raises(CodecError, match="row range"):
        codec.decode(enc.array, fetch, 1, spec, rows=(2, 99))
    with pytest.raises(CodecError, match="param_dtype"):
        AffineCodec(param_dtype="auto").decode(enc.array, fetch, 1, spec)


def test_codes_respect_bits_and_use_full_range() -> None:
    x = _tensor(1)
    for bits in (1, 2, 10, 16):
        enc, *_ = roundtrip(x, "float32", bits=bits)
        assert enc.array.dtype == np.uint16
        # float16 params are rounded outward by < 2^-10 of the range: at 16 bits a few codes
        # at either end may go unused; at low bits the full range is used.
        top, slack = 2**bits - 1, (2**bits - 1) * 2**-10
        assert top - slack <= int(enc.array.max()) <= top
        assert int(enc.array.min()) <= slack


def test_info_is_plain_data_and_matches_decoded_error() -> None:
    x = _tensor(2, (16, 256))
    enc, _, _, y = roundtrip(x, "float32")
    info = enc.info
    assert info["bits"] == 10 and info["granularity"] == "row" and info["clip"] == "none"
    assert info["param_dtype"] == enc.config["param_dtype"] == "float16"
    assert info["params_bytes"] == len(enc.blobs[0]) == 16 * 4
    assert info["params_bytes_per_row"] == 4.0
    assert info["params_bits_per_weight"] == pytest.approx(32 / 256)
    assert info["grid_snr_db"] == pytest.approx(snr_db(*error_energy(x, y)), abs=1e-9)
    assert info["grid_mse"] == pytest.approx(float(np.mean((x - y.astype(np.float64)) ** 2)))
    assert 50.0 < info["grid_snr_db"] < 60.0
    assert all(isinstance(v, str | int | float) for v in info.values())


def test_param_dtype_auto_and_explicit() -> None:
    x = _tensor(3)
    assert roundtrip(x, "float32")[0].config["param_dtype"] == "float16"
    tiny = x * 1e-6  # float16 scales would be subnormal: bfloat16 is finer there
    enc, *_ = roundtrip(tiny, "float32")
    assert enc.config["param_dtype"] == "bfloat16"
    enc, *_ = roundtrip(x, "float32", param_dtype="float32")
    assert enc.config["param_dtype"] == "float32" and len(enc.blobs[0]) == 8 * 8
    big = x * 1e6  # offsets beyond float16
    assert roundtrip(big, "float32")[0].config["param_dtype"] == "bfloat16"
    with pytest.raises(CodecError, match="does not fit float16"):
        roundtrip(big, "float32", param_dtype="float16")


def test_range_beyond_float32_decoding_is_refused() -> None:
    x = np.array([[-3e38, 3e38, 0.0]], np.float32)
    with pytest.raises(CodecError, match="'w'"):
        roundtrip(x, "float32")
    ok = np.array([[1e38, 3e38, 2e38]], np.float32)
    _, _, _, y = roundtrip(ok, "float32")
    assert np.isfinite(y).all()
    assert np.abs(y - ok).max() <= 2e38 / 1023


def test_float16_edges_stay_finite() -> None:
    x = np.array([[-65504, 65504, 0, 1], [65504, 65504, 65504, 65504]], np.float16)
    _, _, _, y = roundtrip(x, "float16")
    assert np.isfinite(y).all()
    assert y[1].tolist() == [65504] * 4
    assert np.abs(y.astype(np.float64) - x.astype(np.float64)).max() <= 131008 / 1023 / 2 + 32


def test_one_d_rows_are_elements_and_groups_run_along_them() -> None:
    x = np.linspace(-1, 1, 50, dtype=np.float32)
    enc, codec, spec, y = roundtrip(x, "float32", granularity="group", group_size=8)
    assert len(enc.blobs[0]) == 2 * 7 * 2  # ceil(50/8) cells
    part = codec.decode(enc.array[13:29], lambda i: enc.blobs[i], 1, spec, rows=(13, 29))
    assert part.tobytes() == y[13:29].tobytes()


def test_group_granularity_beats_row_on_rows_with_local_outliers() -> None:
    x = _tensor(4, (8, 256))
    x[:, 5] *= 40.0
    row = roundtrip(x, "float32", bits=4)[0].info["grid_snr_db"]
    group = roundtrip(x, "float32", bits=4, granularity="group", group_size=64)[0].info
    assert group["grid_snr_db"] > row + 3.0
    assert group["params_bytes"] == 8 * 4 * 4 and group["group_size"] == 64


def test_mse_clip_shrinks_outlier_rows_only_when_noise_is_coarse() -> None:
    x = _tensor(5, (16, 512))
    x[:, 0] = 12.0  # one far outlier per row
    fine = quantize(x, clip="mse")  # clip_bits = 10: the grid is fine, clipping never pays
    assert fine.info["clip_ratio_mean"] == 1.0
    coarse = quantize(x, clip="mse", clip_bits=3.0)
    assert coarse.info["clip_ratio_mean"] < 0.9 and coarse.info["clip_bits"] == 3.0
    # Under a 3-bit grid, the clipped range has lower error than min-max: that's the point.
    q3_clip = quantize(x, bits=3, clip="mse", clip_bits=3.0).info["grid_mse"]
    q3_minmax = quantize(x, bits=3).info["grid_mse"]
    assert q3_clip < 0.8 * q3_minmax
    # ...and the codec still round-trips clipped tensors.
    enc, *_ = roundtrip(x, "float32", clip="mse", clip_bits=3.0)
    assert enc.config["clip"] == "mse" and enc.config["clip_bits"] == 3.0


def test_mse_clip_on_constant_rows_and_tensor_granularity() -> None:
    x = np.full((3, 7), 2.5, np.float32)
    assert quantize(x, clip="mse", clip_bits=2.0).info["clip_ratio_mean"] == 1.0
    y = _tensor(6, (4, 64))
    y[0, 0] = 30.0
    info = quantize(y, clip="mse", clip_bits=3.0, granularity="tensor").info
    assert info["clip_ratio_mean"] < 1.0


def test_float64_and_bfloat16_decode_to_their_own_dtype() -> None:
    x = _tensor(7)
    for dt, np_dt in (("float64", np.float64), ("bfloat16", ml_dtypes.bfloat16)):
        _, _, _, y = roundtrip(x.astype(np_dt), dt)
        assert y.dtype == np.dtype(np_dt)
        assert snr_db(*error_energy(x.astype(np_dt), y)) > 40.0


def test_minilm_weight_at_10_bits_above_50_db(minilm_dir: Path) -> None:
    from safetensors import safe_open

    with safe_open(str(minilm_dir / "model.safetensors"), framework="numpy") as f:
        w = f.get_tensor("encoder.layer.0.intermediate.dense.weight")
    assert w.dtype == np.float32 and w.shape == (1536, 384)
    enc, codec, spec, y = roundtrip(w, "float32", name="encoder.layer.0.intermediate.dense.weight")
    assert snr_db(*error_energy(w, y)) > 50.0
    assert enc.info["grid_snr_db"] > 50.0
    assert enc.info["params_bytes_per_row"] == 4.0
    part = codec.decode(enc.array[100:164], lambda i: enc.blobs[i], 1, spec, rows=(100, 164))
    assert part.tobytes() == y[100:164].tobytes()
