"""Second decoders (crossdecode.py) agree with FFmpeg's, bit for bit, where installed.

Each test skips, saying what to install, when its decoder is missing (docs/decoders.md).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from llmc_format.codecs.base import ArraySpec
from llmc_format.codecs.registry import get_codec
from llmc_format.codecs.video import crossdecode
from llmc_format.codecs.video.codecs import VideoCodec
from llmc_format.container.reader import Reader
from llmc_format.errors import BitstreamError

VECTORS = Path(__file__).resolve().parents[3] / "spec" / "vectors"

#: (codec config, decoder name): frame widths 40 and 72 are not multiples of 16 (dec265's
#: own tool crashes writing such monochrome pictures; the library decodes them)
CASES = [
    ({"id": "vvc", "preset": "faster", "qp": 30}, "vvdec"),
    ({"id": "hevc", "preset": "ultrafast", "qp": 30}, "libde265"),
    ({"id": "hevc", "preset": "ultrafast", "qp": 30, "bits": 12}, "libde265"),
    ({"id": "av1", "encoder": "libsvtav1", "preset": 12, "qp": 40}, "libaom"),
    ({"id": "av1", "encoder": "libaom-av1", "preset": 8, "qp": 40, "bits": 12}, "libaom"),
    ({"id": "av1", "encoder": "libsvtav1", "preset": 12, "qp": 40}, "dav1d"),
]
INSTALL = {"vvdec": "build VVdeC (vvdecapp)", "libde265": "apt-get install libde265-0",
           "libaom": "apt-get install aom-tools", "dav1d": "apt-get install dav1d"}


def _decoder(codec_id: str, name: str) -> crossdecode.SecondDecoder:
    for dec in crossdecode.find_all(codec_id):
        if dec.name == name:
            return dec
    pytest.skip(f"{name} is not installed ({INSTALL[name]}; docs/decoders.md)")


@pytest.mark.parametrize(("config", "name"), CASES, ids=lambda v: v if isinstance(v, str) else
                         f"{v['id']}-{v.get('encoder', '')}-{v.get('bits', 10)}")
@pytest.mark.parametrize("shape", [(40, 72), (100, 40)])
def test_second_decoder_gives_ffmpegs_samples(config: dict, name: str,
                                              shape: tuple[int, int]) -> None:
    dec = _decoder(config["id"], name)
    codec = get_codec(config)
    assert isinstance(codec, VideoCodec)
    top = 1 << config.get("bits", 10)
    arr = np.random.default_rng(sum(shape)).integers(0, top, size=shape, dtype=np.uint16)
    spec = ArraySpec("uint16", shape, "t")
    enc = codec.encode(arr, spec)
    stored = get_codec(enc.config)
    assert isinstance(stored, VideoCodec)
    for frame, blob in zip(stored.stored_frames(spec), enc.blobs, strict=True):
        ours = stored.decode_luma(blob, frame, "t")
        theirs = crossdecode.decode_luma(dec, blob, frame.width, frame.height, frame.depth,
                                         frame.chroma420)
        assert theirs.shape == (frame.height, frame.width)
        assert np.array_equal(theirs, ours)
        assert theirs.max() > 0  # not an empty picture that happens to match


def test_vvdec_rejects_the_old_vectors_blob_and_accepts_it_cut() -> None:
    dec = _decoder("vvc", "vvdec")
    with Reader(VECTORS / "v1-lossy-vvc.llmc") as r:
        blob = r.read_blob(r.tensor("mlp.weight").stage_blobs(1)[0])
    with pytest.raises(BitstreamError, match="Trailing byte"):
        crossdecode.decode_luma(dec, blob, 192, 256, 10, True, "old")
    plane = crossdecode.decode_luma(dec, blob[:-104], 192, 256, 10, True, "old")
    assert plane.shape == (256, 192)


@pytest.mark.parametrize(("codec_id", "name"), [("vvc", "vvdec"), ("hevc", "libde265"),
                                                ("av1", "libaom"), ("av1", "dav1d")])
def test_garbage_is_a_bitstream_error(codec_id: str, name: str) -> None:
    dec = _decoder(codec_id, name)
    with pytest.raises(BitstreamError, match=name):
        crossdecode.decode_luma(dec, b"\x00\x00\x01" + bytes(range(256)) * 4, 64, 64, 10, False)


def test_an_unusable_override_means_no_second_decoder(monkeypatch: pytest.MonkeyPatch,
                                                      tmp_path: Path) -> None:
    monkeypatch.setenv("LLMC_VVDEC", str(tmp_path / "no-such-vvdecapp"))
    assert crossdecode.find("vvc") is None
    assert crossdecode.find("ffv1") is None  # lossless: nothing to compare with
