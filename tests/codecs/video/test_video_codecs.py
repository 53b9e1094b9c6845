"""The video codecs end to end with the real encoders (small tensors, fast presets)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmc_format.codecs.base import ArraySpec, Encoded
from llmc_format.codecs.registry import get_codec
from llmc_format.codecs.video.codecs import VideoCodec
from llmc_format.errors import CodecError

#: one fast configuration per codec (and AV1 encoder)
FAST: dict[str, dict[str, Any]] = {
    "vvc": {"id": "vvc", "preset": "faster"},
    "hevc": {"id": "hevc", "preset": "ultrafast"},
    "av1-svt": {"id": "av1", "encoder": "libsvtav1", "preset": 10},
    "av1-aom": {"id": "av1", "encoder": "libaom-av1", "preset": 8},
    "ffv1": {"id": "ffv1"},
}
LOSSY = ["vvc", "hevc", "av1-svt", "av1-aom"]


def weights(shape: tuple[int, ...], bits: int = 10, seed: int = 0) -> np.ndarray:
    """Gaussian 'weights', min-max quantized per row to ``bits`` like the affine stage."""
    rng = np.random.default_rng(seed)
    rows = shape[0] if len(shape) > 1 else 1
    w = rng.standard_normal((rows, int(np.prod(shape)) // rows))
    lo, hi = w.min(axis=1, keepdims=True), w.max(axis=1, keepdims=True)
    q = np.rint((w - lo) / (hi - lo) * ((1 << bits) - 1)).astype(np.uint16)
    return q.reshape(shape)


def codec(name: str, **params: Any) -> VideoCodec:
    made = get_codec({**FAST[name], **params})
    assert isinstance(made, VideoCodec)
    return made


class Fetcher:
    """A ``fetch`` that remembers which blobs were asked for."""

    def __init__(self, blobs: list[bytes]) -> None:
        self.blobs, self.calls = blobs, []

    def __call__(self, i: int) -> bytes:
        self.calls.append(i)
        return self.blobs[i]


def round_trip(name: str, array: np.ndarray, rows: tuple[int, int] | None = None,
               **params: Any) -> tuple[np.ndarray, Encoded, Fetcher]:
    spec = ArraySpec("uint16", array.shape, "t")
    enc = codec(name, **params).encode(array, spec)
    fetch = Fetcher(enc.blobs)
    out = get_codec(enc.config).decode(fetch, len(enc.blobs), spec, rows)  # type: ignore[attr-defined]
    return out, enc, fetch


def mse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean((a.astype(np.float64) - b) ** 2))


@pytest.mark.parametrize("name", list(FAST))
@pytest.mark.parametrize("shape", [(40, 56), (6, 5, 8), (100,)])
def test_round_trip_keeps_shape_dtype_and_range(name: str, shape: tuple[int, ...]) -> None:
    array = weights(shape)
    out, enc, _ = round_trip(name, array)
    assert out.shape == array.shape and out.dtype == np.uint16
    assert int(out.max()) < 1 << 10
    # default qp: the error is a fraction of the signal (SNR > 10 dB), not garbage
    assert mse(out, array) < array.astype(np.float64).var() / 10
    assert enc.info["bytes"] == sum(map(len, enc.blobs)) > 0
    assert enc.info["encode_seconds"] > 0 and enc.info["frames"] == len(enc.blobs)


@given(
    shape=st.lists(st.integers(1, 40), min_size=1, max_size=3).map(tuple),
    bits=st.integers(1, 16),
    seed=st.integers(0, 2**32 - 1),
)
@settings(max_examples=12, deadline=None)
def test_ffv1_is_bit_exact(shape: tuple[int, ...], bits: int, seed: int) -> None:
    array = np.random.default_rng(seed).integers(0, 1 << bits, size=shape, dtype=np.uint16)
    out, enc, _ = round_trip("ffv1", array, bits=bits)
    np.testing.assert_array_equal(out, array)
    assert "qp" not in enc.info


@pytest.mark.parametrize(("name", "qps"), [
    ("vvc", (22, 30, 38)), ("hevc", (20, 28, 36)), ("av1-svt", (16, 32, 48)),
    ("av1-aom", (16, 32, 48)),
])
def test_lossy_error_is_bounded_and_shrinks_as_qp_falls(name: str, qps: tuple[int, ...]) -> None:
    array = weights((64, 64), seed=1)
    results = [round_trip(name, array, qp=qp) for qp in qps]
    errors = [mse(out, array) for out, _, _ in results]
    sizes = [enc.info["bytes"] for _, enc, _ in results]
    assert errors[0] < errors[1] < errors[2], errors
    assert sizes[0] > sizes[1] > sizes[2], sizes
    assert errors[0] < array.astype(np.float64).var() / 100  # > 20 dB at the finest qp
    assert [enc.info["qp"] for _, enc, _ in results] == list(qps)


def test_a_frame_codes_the_same_whatever_else_is_in_the_tensor() -> None:
    # one process per frame: libvvenc cannot code frame 0 differently because more follow
    # (vvc frames start on its 32-row block grid: bands of 32 rows)
    array = weights((80, 16), seed=8)
    _, several, _ = round_trip("vvc", array, target_pixels=32 * 16)
    _, alone, _ = round_trip("vvc", array[:32], target_pixels=32 * 16)
    assert len(several.blobs) == 3 and len(alone.blobs) == 1
    assert several.blobs[0] == alone.blobs[0]


@pytest.mark.parametrize("name", ["hevc", "av1-aom", "ffv1"])
def test_12_bit_values_round_trip(name: str) -> None:
    array = weights((24, 40), bits=12, seed=9)
    out, enc, _ = round_trip(name, array, bits=12)
    assert enc.config["pix_fmt"] == "gray12le"
    assert int(out.max()) < 1 << 12 and int(out.max()) > 1 << 10
    assert mse(out, array) < array.astype(np.float64).var() / 10


def test_fewer_bits_are_coded_as_shifted_samples() -> None:
    # bits=8 codes v << 2 at 10-bit depth: the very bitstream of the same samples at bits=10
    array = weights((32, 48), bits=8)
    out8, enc8, _ = round_trip("hevc", array, bits=8)
    _, enc10, _ = round_trip("hevc", array << 2, bits=10)
    assert enc8.blobs == enc10.blobs
    assert int(out8.max()) < 256 and mse(out8, array) < array.astype(np.float64).var() / 10


MULTI = {"max_width": 24, "target_pixels": 16 * 24}
#: with MULTI on a 100x40 tensor: (tile_rows, tile_cols, frames), then rows -> frames fetched
EXPECT_8 = ((16, 24, 14), {(20, 37): [2, 3, 4, 5], (0, 1): [0, 1], (99, 100): [12, 13],
                           (16, 32): [2, 3], (5, 5): []})
EXPECT_1 = ((17, 20, 12), {(20, 37): [2, 3, 4, 5], (0, 1): [0, 1], (99, 100): [10, 11],
                           (16, 32): [0, 1, 2, 3], (5, 5): []})  # ffv1 needs no alignment


@pytest.mark.parametrize(("name", "expect"), [
    ("hevc", EXPECT_8), ("av1-svt", EXPECT_8), ("ffv1", EXPECT_1),
])
def test_row_range_decode_fetches_only_the_covering_frames(name: str, expect: tuple) -> None:
    array = weights((100, 40))
    full, enc, fetch_all = round_trip(name, array, **MULTI)
    geom = enc.config["frames"]
    assert (geom["tile_rows"], geom["tile_cols"], len(enc.blobs)) == expect[0]
    assert sorted(fetch_all.calls) == list(range(len(enc.blobs)))
    spec = ArraySpec("uint16", array.shape, "t")
    decoder = get_codec(enc.config)
    for rows, frames in expect[1].items():
        fetch = Fetcher(enc.blobs)
        part = decoder.decode(fetch, len(enc.blobs), spec, rows)  # type: ignore[attr-defined]
        np.testing.assert_array_equal(part, full[rows[0]:rows[1]])
        assert fetch.calls == frames, rows


def test_row_range_of_a_1d_tensor_is_an_element_range() -> None:
    array = weights((200,))
    full, enc, _ = round_trip("hevc", array, max_width=64)
    assert len(enc.blobs) == 4  # 4 tiles of 64 elements (hevc tiles start on its 32 grid)
    fetch = Fetcher(enc.blobs)
    spec = ArraySpec("uint16", array.shape, "t")
    part = get_codec(enc.config).decode(fetch, 4, spec, (70, 130))  # type: ignore[attr-defined]
    np.testing.assert_array_equal(part, full[70:130])
    assert fetch.calls == [1, 2]


def test_vvc_multi_frame_row_range() -> None:
    array = weights((40, 30), seed=3)
    full, enc, _ = round_trip("vvc", array, max_width=16, target_pixels=16 * 16)
    assert len(enc.blobs) == 3 * 2
    fetch = Fetcher(enc.blobs)
    spec = ArraySpec("uint16", array.shape, "t")
    part = get_codec(enc.config).decode(fetch, 6, spec, (17, 30))  # type: ignore[attr-defined]
    np.testing.assert_array_equal(part, full[17:30])
    assert fetch.calls == [2, 3]


@pytest.mark.parametrize("name", ["vvc", "hevc", "ffv1"])
def test_reconstruction_is_what_decode_returns(name: str) -> None:
    array = weights((40, 30), seed=8)
    full, enc, _ = round_trip(name, array, max_width=16, target_pixels=16 * 16)
    assert enc.reconstruction is not None and len(enc.blobs) == 6
    np.testing.assert_array_equal(enc.reconstruction, full)
    assert enc.reconstruction.shape == array.shape and enc.reconstruction.dtype == np.uint16


@pytest.fixture(scope="module")
def encoded() -> dict[str, tuple[Encoded, Encoded]]:
    """Per codec: a 32x48 tensor and a 64x48 one (different frame heights)."""
    out = {}
    for name in FAST:
        a, b = weights((32, 48), seed=4), weights((64, 48), seed=5)
        out[name] = (codec(name).encode(a, ArraySpec("uint16", a.shape, "a")),
                     codec(name).encode(b, ArraySpec("uint16", b.shape, "b")))
    return out


def decode_with_blob(enc: Encoded, blob: bytes, name: str = "a") -> np.ndarray:
    spec = ArraySpec("uint16", (32, 48), name)
    return get_codec(enc.config).decode(lambda i: blob, 1, spec)  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", list(FAST))
def test_blob_of_another_resolution_is_refused(name: str, encoded: dict) -> None:
    small, big = encoded[name]
    np.testing.assert_array_equal(decode_with_blob(small, small.blobs[0]).shape, (32, 48))
    with pytest.raises(CodecError, match=r"tensor 'a' frame 0: .*(64|max_pixels|alloc|declares)"):
        decode_with_blob(small, big.blobs[0])


@pytest.mark.parametrize("name", list(FAST))
@pytest.mark.parametrize("damage", ["half", "garbage", "empty"])
def test_truncated_or_garbage_blob_is_refused(name: str, damage: str, encoded: dict) -> None:
    enc = encoded[name][0]
    blob = enc.blobs[0]
    bad = {"half": blob[: len(blob) // 2], "empty": b"",
           "garbage": np.random.default_rng(7).bytes(len(blob))}[damage]
    with pytest.raises(CodecError, match="tensor 'a' frame 0"):
        decode_with_blob(enc, bad)


@pytest.mark.parametrize("name", list(FAST))
def test_blob_of_another_tensor_with_the_same_geometry_is_refused(name: str) -> None:
    a, b = weights((32, 48), seed=4), weights((32, 48), seed=6)
    enc_a = codec(name).encode(a, ArraySpec("uint16", a.shape, "a"))
    enc_b = codec(name).encode(b, ArraySpec("uint16", b.shape, "a"))
    with pytest.raises(CodecError, match="tensor 'a' frame 0: the decoded frame differs"):
        decode_with_blob(enc_a, enc_b.blobs[0])


@pytest.mark.parametrize("name", ["vvc", "hevc", "av1-svt", "av1-aom"])
def test_blob_holding_two_frames_is_refused(name: str, encoded: dict) -> None:
    enc = encoded[name][0]
    with pytest.raises(CodecError, match="tensor 'a' frame 0: blob decoded to 2 frames"):
        decode_with_blob(enc, enc.blobs[0] * 2)


@pytest.mark.parametrize("name", list(FAST))
def test_stored_config_is_plain_data_and_reproduces_the_codec(name: str, encoded: dict) -> None:
    enc = encoded[name][0]
    config = enc.config

    def plain(x: Any) -> bool:
        if isinstance(x, dict):
            return all(isinstance(k, str) and plain(v) for k, v in x.items())
        if isinstance(x, list):
            return all(plain(v) for v in x)
        return isinstance(x, (str, int, float, bool, bytes))

    assert plain(config)
    assert {"frames", "pix_fmt", "frame_hashes", "encoder", "encoder_version", "ffmpeg_version",
            "bits"} <= set(config)
    assert "threads" not in config
    assert get_codec(config).get_config() == config
    if name != "ffv1":
        assert {"qp", "preset"} <= set(config)


def test_threads_do_not_change_the_bitstream(encoded: dict) -> None:
    a = weights((32, 48), seed=4)
    one = codec("hevc", threads=1).encode(a, ArraySpec("uint16", a.shape, "a"))
    assert one.blobs == encoded["hevc"][0].blobs


@pytest.mark.parametrize(
    "config",
    [
        {"id": "vvc", "qp": 64},
        {"id": "vvc", "qp": "30"},
        {"id": "vvc", "preset": "ultrafast"},
        {"id": "vvc", "bits": 11},  # libvvenc codes 10-bit only
        {"id": "av1", "encoder": "libsvtav1", "bits": 12},
        {"id": "hevc", "encoder": "libvvenc"},
        {"id": "ffv1", "qp": 10},
        {"id": "hevc", "colour": "red"},
        {"id": "vvc", "max_width": 20},  # not a multiple of 8
    ],
)
def test_bad_parameters_are_refused(config: dict[str, Any]) -> None:
    with pytest.raises(CodecError):
        get_codec(config)


def test_av1_preset_given_as_text_is_stored_as_a_number() -> None:
    assert get_codec({"id": "av1", "preset": "10"}).get_config()["preset"] == 10
    with pytest.raises(CodecError, match="preset"):
        get_codec({"id": "av1", "preset": "fast"})


def test_decode_refuses_configs_that_do_not_fit_the_tensor(encoded: dict) -> None:
    enc = encoded["hevc"][0]
    spec = ArraySpec("uint16", (32, 48), "a")
    fetch = Fetcher(enc.blobs)
    cases = [
        (enc.config, 2, spec, None, "2 blobs"),
        (enc.config, 1, ArraySpec("uint16", (33, 48), "a"), None, "33x48"),
        (enc.config, 1, spec, (0, 33), "bad row range"),
        (enc.config, 1, spec, (3, 2), "bad row range"),
        (enc.config, 1, ArraySpec("float32", (32, 48), "a"), None, "uint16"),
        ({**enc.config, "pix_fmt": "gray"}, 1, spec, None, "pix_fmt"),
        ({**enc.config, "frames": {**enc.config["frames"], "align": 1}}, 1, spec, None, "align"),
        ({k: v for k, v in enc.config.items() if k != "frames"}, 1, spec, None, "lacks"),
        ({**enc.config, "frame_hashes": []}, 1, spec, None, "frame_hashes"),
    ]
    for config, n_blobs, sp, rows, message in cases:
        with pytest.raises(CodecError, match=message):
            get_codec(config).decode(fetch, n_blobs, sp, rows)  # type: ignore[attr-defined]
    assert fetch.calls == []  # refused before reading any blob


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.full((4, 4), 1024, dtype=np.uint16), "does not fit in bits=10"),
        (np.zeros((0, 4), dtype=np.uint16), "non-empty"),
        (np.zeros((), dtype=np.uint16), "non-empty"),
    ],
)
def test_encode_refuses_what_it_cannot_code(array: np.ndarray, message: str) -> None:
    with pytest.raises(CodecError, match=message):
        codec("vvc").encode(array, ArraySpec("uint16", array.shape, "t"))


def test_encode_checks_the_input_against_its_spec() -> None:
    array = np.zeros((4, 4), dtype=np.int32)
    with pytest.raises(CodecError, match="input"):
        codec("hevc").encode(array, ArraySpec("uint16", (4, 4), "t"))
