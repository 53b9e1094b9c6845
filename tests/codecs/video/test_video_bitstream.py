"""Bitstream structure checks (bitstream.py) on real encoder output and on broken streams."""

from __future__ import annotations

import contextlib
import logging
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmc_format.codecs.base import ArraySpec
from llmc_format.codecs.registry import get_codec
from llmc_format.codecs.video import bitstream, ffmpeg
from llmc_format.codecs.video.codecs import HevcCodec, VvcCodec
from llmc_format.container.reader import Reader
from llmc_format.errors import BitstreamError

VECTORS = Path(__file__).resolve().parents[3] / "spec" / "vectors"


def _blobs(config: dict, shape: tuple[int, int] = (64, 96), seed: int = 0) -> list[bytes]:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 1024, size=shape, dtype=np.uint16)
    return get_codec(config).encode(arr, ArraySpec("uint16", shape, "t")).blobs


@pytest.fixture(scope="module")
def vvc_blob() -> bytes:
    return _blobs({"id": "vvc", "preset": "faster", "qp": 32})[0]


@pytest.fixture(scope="module")
def hevc_blob() -> bytes:
    return _blobs({"id": "hevc", "preset": "ultrafast", "qp": 30})[0]


@pytest.fixture(scope="module")
def av1_blob() -> bytes:
    return _blobs({"id": "av1", "encoder": "libsvtav1", "preset": 12, "qp": 40})[0]


def _old_vector_blob() -> bytes:
    with Reader(VECTORS / "v1-lossy-vvc.llmc") as r:
        entry = r.tensor("mlp.weight")
        return r.read_blob(entry.stage_blobs(1)[0])


def test_fresh_blobs_of_every_codec_pass(vvc_blob: bytes, hevc_blob: bytes, av1_blob: bytes) -> None:
    units = bitstream.parse_annexb("vvc", vvc_blob)
    assert {15, 16} <= {u.nal_type for u in units} and units[-1].end == len(vvc_blob)
    assert {32, 33, 34} <= {u.nal_type for u in bitstream.parse_annexb("hevc", hevc_blob)}
    obus = bitstream.parse_obus(av1_blob)
    assert obus[-1][1] + obus[-1][2] == len(av1_blob)
    ffv1 = _blobs({"id": "ffv1"})[0]
    for codec, blob in (("vvc", vvc_blob), ("hevc", hevc_blob), ("av1", av1_blob), ("ffv1", ffv1)):
        bitstream.check(codec, blob)
        with pytest.raises(BitstreamError, match=r"console text|reserved header bit"):
            bitstream.check(codec, blob + b"Configuration warning: a message\n\n")


def test_the_old_vvc_vector_blob_is_rejected_and_its_console_text_located() -> None:
    blob = _old_vector_blob()
    bitstream.parse_annexb("vvc", blob)  # NAL structure alone cannot see it: inside the slice
    start = bitstream.console_text_start(blob)
    assert start is not None and blob[start:].startswith(b"Configuration warning: ALFSpeed")
    with pytest.raises(BitstreamError, match=r"console text .* offset 22263"):
        bitstream.check("vvc", blob, "old vector")
    bitstream.check("vvc", blob[:start])


def test_an_encoder_that_prints_to_stdout_no_longer_reaches_the_bitstream(
        caplog: pytest.LogCaptureFixture) -> None:
    # no vvenc_params, preset faster: libvvenc prints "Configuration warning: ALFSpeed ..."
    # to stdout (that text is inside spec/vectors/v1-lossy-vvc.llmc)
    codec = VvcCodec(preset="faster", qp=32, vvenc_params="")
    with caplog.at_level(logging.DEBUG, logger=ffmpeg.__name__):
        blobs = codec.encode(np.full((32, 64), 500, dtype=np.uint16),
                             ArraySpec("uint16", (32, 64), "t")).blobs
    assert "ALFSpeed" in caplog.text  # the library did print ...
    assert b"ALFSpeed" not in blobs[0] and b"Configuration" not in blobs[0]  # ... elsewhere
    bitstream.check("vvc", blobs[0])
    assert bitstream.console_text_start(blobs[0]) is None


@pytest.mark.parametrize("preset", VvcCodec.presets)
def test_every_vvc_preset_encodes(preset: str) -> None:
    blob = _blobs({"id": "vvc", "preset": preset, "qp": 36}, shape=(32, 64))[0]
    bitstream.check("vvc", blob)


@pytest.mark.parametrize("preset", HevcCodec.presets)
def test_every_hevc_preset_encodes(preset: str) -> None:
    blob = _blobs({"id": "hevc", "preset": preset, "qp": 36}, shape=(32, 64))[0]
    bitstream.check("hevc", blob)


@pytest.mark.parametrize(("encoder", "preset"), [("libsvtav1", 0), ("libsvtav1", 13),
                                                 ("libaom-av1", 0), ("libaom-av1", 8)])
def test_av1_preset_range_ends_encode(encoder: str, preset: int) -> None:
    blob = _blobs({"id": "av1", "encoder": encoder, "preset": preset, "qp": 40}, (32, 64))[0]
    bitstream.check("av1", blob)


def _patch(blob: bytes, at: int, value: int) -> bytes:
    b = bytearray(blob)
    b[at] = value
    return bytes(b)


def test_annexb_damage_is_named(vvc_blob: bytes, hevc_blob: bytes) -> None:
    units = bitstream.parse_annexb("vvc", vvc_blob)
    first, last = units[0], units[-1]
    cases = {
        "not leading zero": b"\x07" + vvc_blob,
        "forbidden or reserved header bit": _patch(vvc_blob, first.offset, 0x80),
        "reserved header value": _patch(vvc_blob, first.offset + 1, (5 << 3) | 1),  # RSV_VCL_5
        "forbidden byte pattern 00 00 02": vvc_blob[:last.offset + 4] + b"\x00\x00\x02\x40"
        + vvc_blob[last.offset + 4:],
        "followed by": vvc_blob[:last.offset + 4] + b"\x00\x00\x03\x40" + vvc_blob[last.offset + 4:],
        "no Annex B start code": b"\x12" * 40,
        "parameter sets": vvc_blob[last.offset - 3:],  # the slice alone
    }
    for message, blob in cases.items():
        with pytest.raises(BitstreamError, match=message):
            bitstream.check("vvc", blob)
    # a slice whose last RBSP byte is zero has lost its stop bit (cabac_zero_words aside)
    sps = bitstream.parse_annexb("hevc", hevc_blob)[1]
    assert sps.nal_type == 33
    no_stop = hevc_blob[:sps.end - 1] + b"\x00\x00\x03" + hevc_blob[sps.end:]  # RBSP ends 00 00
    with pytest.raises(BitstreamError, match="stop bit"):
        bitstream.check("hevc", no_stop)
    bitstream.check("vvc", vvc_blob + b"\x00\x00")  # trailing_zero_8bits are allowed


def test_av1_damage_is_named(av1_blob: bytes) -> None:
    with pytest.raises(BitstreamError, match="runs past the end"):
        bitstream.check("av1", av1_blob[:-1])
    with pytest.raises(BitstreamError):  # console text after the last OBU
        bitstream.check("av1", av1_blob + b"Configuration warning: x\n")
    with pytest.raises(BitstreamError, match="reserved OBU type"):
        bitstream.check("av1", bytes([0x02 | (10 << 3), 0]) + av1_blob)
    with pytest.raises(BitstreamError, match="sequence header and a frame"):
        bitstream.check("av1", bytes([0x12, 0]))  # a temporal delimiter alone


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.sampled_from(["vvc", "hevc", "av1", "ffv1"]))
def test_arbitrary_bytes_give_a_bitstream_error_or_pass(data: bytes, codec: str) -> None:
    with contextlib.suppress(BitstreamError):  # any other exception fails the test
        bitstream.check(codec, data)


def _spec_numbers(cell: str) -> set[int]:
    """The integers of a FORMAT.md table cell outside parentheses: "4, 6 (RSV_VCL), 10–12" -> 4, 6, 10..12."""
    out: set[int] = set()
    for lo, hi in re.findall(r"(\d+)(?:–(\d+))?(?![^(]*\))", cell):
        out.update(range(int(lo), int(hi or lo) + 1))
    return out


def test_nal_rules_match_the_spec_table() -> None:
    """The reserved/VCL/parameter-set values bitstream.py enforces are FORMAT.md §7.3's table."""
    text = (VECTORS.parent / "FORMAT.md").read_text(encoding="utf-8")
    heads = ("reserved `nal_unit_type`", "reserved `nuh_layer_id`", "VCL (slice) `nal_unit_type`",
             "parameter sets every slice")
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith(heads):
            rows[cells[0].split()[0] + cells[0].split()[1]] = cells[1:]
    assert len(rows) == 4, rows
    for col, codec_id in enumerate(("vvc", "hevc")):
        vcl, reserved, needed, max_layer = bitstream._NAL_RULES[codec_id]
        assert _spec_numbers(rows["reserved`nal_unit_type`"][col]) == set(reserved)
        assert _spec_numbers(rows["reserved`nuh_layer_id`"][col]) == set(range(max_layer + 1, 64))
        assert _spec_numbers(rows["VCL(slice)"][col]) == set(vcl)
        assert _spec_numbers(rows["parametersets"][col]) == set(needed)
