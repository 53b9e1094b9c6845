"""Decode one frame's bitstream in-process with PyAV (the only module that imports ``av``).

Decoding runs in-process (unlike encoding) because it is fast (~20 M weights/s for
VVC) and a reader should not need to spawn FFmpeg per frame. Raw elementary streams
(Annex-B VVC/HEVC, AV1 OBUs) go through libavcodec's parser straight into a decoder
context; that is about twice as fast as ``av.open(...)``, whose stream probing decodes
the frame an extra time. FFV1 has no parser and needs its container for the
configuration record, so it is demuxed from NUT.

A blob must hold exactly one frame of exactly the expected size and pixel format; the
decoder is also told the expected pixel count (``max_pixels``, rounded up to whole
128x128 coding units) so a lying bitstream cannot make it allocate a much larger
picture. Anything else raises ``CodecError``.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import av
import numpy as np

from llmc_format.errors import CodecError

#: Decoders allocate whole coding tree units (VVC: up to 128x128), so the pixel limit a
#: decoder checks is the frame size rounded up to this.
_CTU = 128

#: Exceptions PyAV / libavcodec raise on bad input; all become ``CodecError``.
_DECODE_ERRORS = (av.FFmpegError, ValueError, OSError, EOFError, IndexError, TypeError)


def decoder_versions() -> dict[str, str]:
    """What decodes the frames here (and computed the frame hashes at pack time): PyAV
    and the libavcodec it runs, recorded in each lossy archive's metadata so an archivist
    knows which implementation the hashes were reproduced with."""
    lib = av.library_versions.get("libavcodec")
    return {"pyav": str(av.__version__),
            "libavcodec": ".".join(map(str, lib)) if lib else "unknown"}


@dataclass(frozen=True)
class FrameFormat:
    """What a decoded frame must look like."""

    #: libavcodec decoder name ("vvc", "hevc", "libdav1d", "ffv1")
    decoder: str
    #: demuxer of the blob's container, or "" for a raw elementary stream
    container: str
    width: int
    height: int
    #: pixel format the decoder must output ("yuv420p10le", "gray10le"...)
    pix_fmt: str


def decode_frame(blob: bytes, fmt: FrameFormat, what: str) -> np.ndarray:
    """The luma plane of the single frame in ``blob``: ``(height, width)`` uint16.

    ``what`` names the tensor and frame for error messages.
    """
    try:
        frames = _decode_container(blob, fmt) if fmt.container else _decode_raw(blob, fmt)
    except _DECODE_ERRORS as exc:
        raise CodecError(f"{what}: {fmt.decoder} could not decode the frame: {exc}") from None
    if len(frames) != 1:
        raise CodecError(f"{what}: blob decoded to {len(frames)} frames, expected exactly 1")
    frame = frames[0]
    if (frame.width, frame.height) != (fmt.width, fmt.height):
        raise CodecError(f"{what}: decoded frame is {frame.width}x{frame.height}, "
                         f"expected {fmt.width}x{fmt.height}")
    if frame.format.name != fmt.pix_fmt:
        raise CodecError(f"{what}: decoded pixel format {frame.format.name}, expected {fmt.pix_fmt}")
    try:
        return _luma(frame)
    except ValueError as exc:
        raise CodecError(f"{what}: {exc}") from None


def _decode_raw(blob: bytes, fmt: FrameFormat) -> list[av.VideoFrame]:
    ctx = av.CodecContext.create(fmt.decoder, "r")
    ctx.options = {
        "max_pixels": str(_up(fmt.width, _CTU) * _up(fmt.height, _CTU)),
        # fail on damage instead of concealing it (the HEVC decoder conceals a truncated slice)
        "err_detect": "explode",
    }
    if fmt.decoder == "vvc":
        # FFmpeg's VVC decoder with its own worker threads (the default) decoded one 96x40
        # frame to either of two pictures, run to run (PyAV 18.1, libavcodec 62.28; ~40% wrong,
        # SNR -1 dB instead of 15.9). One thread is deterministic, and as fast on frames
        # this size. tests/robustness/test_reproducible.py checks it.
        ctx.thread_count = 1
    frames: list[av.VideoFrame] = []
    for packet in [*ctx.parse(blob), *ctx.parse(None)]:
        frames.extend(ctx.decode(packet))
        if len(frames) > 1:  # no need to decode more: it is already wrong
            return frames
    frames.extend(ctx.decode(None))  # flush decoders that hold frames back (dav1d)
    return frames


def _decode_container(blob: bytes, fmt: FrameFormat) -> list[av.VideoFrame]:
    with av.open(io.BytesIO(blob), format=fmt.container) as container:
        streams = container.streams.video
        if len(container.streams) != 1 or len(streams) != 1:
            raise ValueError(f"container holds {len(container.streams)} streams, expected 1 video")
        ctx = streams[0].codec_context
        if ctx.name != fmt.decoder or (ctx.width, ctx.height) != (fmt.width, fmt.height):
            raise ValueError(f"container declares a {ctx.width}x{ctx.height} {ctx.name} stream, "
                             f"expected {fmt.width}x{fmt.height} {fmt.decoder}")
        frames: list[av.VideoFrame] = []
        for frame in container.decode(streams[0]):
            frames.append(frame)
            if len(frames) > 1:
                break
        return frames


def _up(n: int, a: int) -> int:
    return -(-n // a) * a


def _luma(frame: av.VideoFrame) -> np.ndarray:
    """Plane 0 as a fresh ``(height, width)`` uint16 array (stride removed)."""
    plane = frame.planes[0]
    itemsize = 1 if frame.format.name == "gray" else 2
    dtype = np.uint8 if itemsize == 1 else np.dtype("<u2")
    data = np.frombuffer(plane, dtype=dtype)
    if data.size * itemsize < plane.line_size * (frame.height - 1) + frame.width * itemsize:
        raise ValueError(f"decoded plane is smaller than a {frame.width}x{frame.height} frame")
    rows = np.lib.stride_tricks.as_strided(
        data, shape=(frame.height, frame.width), strides=(plane.line_size, itemsize)
    )
    return rows.astype(np.uint16)
