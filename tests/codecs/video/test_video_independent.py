"""Each blob is a standard bitstream: FFmpeg's command-line decoder agrees with PyAV on it."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

from llmc_format.codecs.base import ArraySpec
from llmc_format.codecs.registry import get_codec
from llmc_format.codecs.video import ffmpeg


def ffmpeg_luma(
    blob: bytes, demuxer: str, decoder: str, pix_fmt: str, height: int, width: int
) -> np.ndarray:
    """Decode ``blob`` with the FFmpeg binary (a separate process) and return plane 0."""
    cmd = [ffmpeg.ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-f", demuxer,
           "-c:v", decoder, "-i", "-", "-f", "rawvideo", "-pix_fmt", pix_fmt, "-"]
    out = subprocess.run(cmd, input=blob, capture_output=True, check=True).stdout
    assert len(out) >= height * width * 2
    return np.frombuffer(out[: height * width * 2], dtype="<u2").reshape(height, width)


@pytest.mark.parametrize(
    ("config", "demuxer", "decoder", "pix_fmt"),
    [
        ({"id": "vvc", "preset": "faster", "qp": 34}, "vvc", "vvc", "yuv420p10le"),
        ({"id": "hevc", "preset": "ultrafast"}, "hevc", "hevc", "gray10le"),
        # AV1 through libaom's decoder: another implementation than PyAV's libdav1d
        ({"id": "av1", "encoder": "libsvtav1", "preset": 10}, "obu", "libaom-av1", "yuv420p10le"),
    ],
)
def test_each_blob_decodes_alone_with_the_ffmpeg_binary(
    config: dict, demuxer: str, decoder: str, pix_fmt: str
) -> None:
    rng = np.random.default_rng(11)
    array = np.clip(rng.normal(512, 90, size=(40, 30)), 0, 1023).astype(np.uint16)
    spec = ArraySpec("uint16", array.shape, "t")
    # two 24x16-row bands x two column tiles: blob 3 is the padded bottom-right corner
    enc = get_codec({**config, "max_width": 16, "target_pixels": 24 * 16}).encode(array, spec)
    assert len(enc.blobs) == 4
    ours = get_codec(enc.config).decode(lambda i: enc.blobs[i], 4, spec)  # type: ignore[attr-defined]
    geom = enc.config["frames"]
    for k, blob in enumerate(enc.blobs):
        band, tile = divmod(k, 2)
        r0, c0 = band * geom["tile_rows"], tile * geom["tile_cols"]
        rows, cols = min(geom["tile_rows"], 40 - r0), min(geom["tile_cols"], 30 - c0)
        height, width = max(16, -(-rows // 8) * 8), max(16, -(-cols // 8) * 8)
        theirs = ffmpeg_luma(blob, demuxer, decoder, pix_fmt, height, width)
        np.testing.assert_array_equal(theirs[:rows, :cols], ours[r0:r0 + rows, c0:c0 + cols])
    assert np.mean((ours.astype(float) - array) ** 2) < array.astype(float).var()
