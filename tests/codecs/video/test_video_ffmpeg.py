"""Finding and running the FFmpeg binary (ffmpeg.py), with the real binary."""

from __future__ import annotations

import os

import numpy as np
import pytest

from llmc_format.codecs.video import ffmpeg
from llmc_format.errors import CodecError, EncoderMissingError, EncoderRefusedError


def test_binary_and_encoders_are_found() -> None:
    assert os.access(ffmpeg.ffmpeg_exe(), os.X_OK)
    encoders = ffmpeg.available_encoders()
    assert {"libvvenc", "libx265", "libsvtav1", "libaom-av1", "ffv1"} <= encoders
    assert "=" not in encoders and "libmp3lame" not in encoders  # no legend, no audio encoders
    assert ffmpeg.available_encoders() is encoders  # listed once, then cached


def test_encoder_versions_are_read_from_the_libraries() -> None:
    vvenc = ffmpeg.encoder_info("libvvenc", "yuv420p10le")
    assert vvenc.name == "libvvenc" and vvenc.version[0].isdigit()
    x265 = ffmpeg.encoder_info("libx265", "gray10le")
    assert x265.version[0].isdigit() and x265.ffmpeg_version == ffmpeg.ffmpeg_version()
    assert ffmpeg.ffmpeg_version() != "unknown"


def test_env_override_naming_a_missing_file_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ffmpeg.ENV_VAR, "/nonexistent/ffmpeg")
    with pytest.raises(EncoderMissingError, match="LLMC_FFMPEG"):
        ffmpeg.ffmpeg_exe()


def test_env_override_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    real = ffmpeg.ffmpeg_exe()
    monkeypatch.setenv(ffmpeg.ENV_VAR, real)
    assert ffmpeg.ffmpeg_exe() == real


def test_missing_encoder_names_what_to_install() -> None:
    with pytest.raises(EncoderMissingError, match="imageio-ffmpeg"):
        ffmpeg.require_encoder("libnosuchcodec")


def test_failed_encode_quotes_ffmpeg_stderr() -> None:
    # libvvenc refuses 8x8 pictures: the error carries FFmpeg's error line, on one line
    raw = np.full(8 * 8 * 3 // 2, 512, dtype="<u2").tobytes()
    with pytest.raises(EncoderRefusedError,
                       match=r"tensor 'x' frame 3: libvvenc failed.*FFmpeg said: [^\[\n]*rror") as e:
        ffmpeg.encode_frame("libvvenc", "yuv420p10le", 8, 8, raw, ["-g", "1"], "vvc",
                            what="tensor 'x' frame 3")
    assert "\n" not in str(e.value)


def test_large_frames_pass_through_the_pipes_without_deadlock() -> None:
    # 8 MiB in, ~8 MiB out (noise does not compress): far beyond any pipe buffer
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 1 << 16, size=(2048, 2048), dtype=np.uint16)
    out = ffmpeg.encode_frame("ffv1", "gray16le", 2048, 2048, frame.astype("<u2").tobytes(),
                              ["-level", "3"], "nut", what="big")
    assert len(out) > 8 << 20


def test_encode_outliving_its_timeout_is_killed() -> None:
    raw = np.zeros(1024 * 1024 * 3 // 2, dtype="<u2").tobytes()
    with pytest.raises(CodecError, match=r"took more than 0\.01 s"):
        ffmpeg.encode_frame("libvvenc", "yuv420p10le", 1024, 1024, raw,
                            ["-preset", "slower", "-g", "1"], "vvc", timeout=0.01, what="slow")
