"""The FFmpeg binary: find it, ask it what it can do, run one encode through pipes.

This is the only module in llmc that starts encoder processes (``crossdecode.py`` starts
the second decoders). Encoding goes through the FFmpeg
command-line tool rather than PyAV because the encoders we want (libvvenc above all) ship
in the static binary of ``imageio-ffmpeg``, while PyAV's wheels carry no VVC encoder.

The binary is ``$LLMC_FFMPEG`` when that variable is set (a path to an executable),
otherwise the one ``imageio_ffmpeg.get_ffmpeg_exe()`` finds. Raw frames go in on stdin
and the bitstream comes out on a pipe of its own (FFmpeg's ``pipe:N`` on a descriptor
passed to the child), never on stdout: encoder libraries print console messages to
stdout (libvvenc writes ``Configuration warning: ...`` there), and a bitstream read from
stdout once carried such text after its last NAL unit, which FFmpeg's decoder ignores
and conformant decoders reject. stdout is drained separately and only quoted in errors.
No temporary files: ``subprocess.communicate`` feeds stdin and drains stdout/stderr while
a thread drains the bitstream pipe, so a frame larger than the pipe buffers cannot
deadlock the two processes.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from llmc_format.errors import CodecError, EncoderMissingError, EncoderRefusedError

log = logging.getLogger(__name__)

#: Environment variable naming the FFmpeg executable to use instead of imageio-ffmpeg's.
ENV_VAR = "LLMC_FFMPEG"

#: How to get an FFmpeg that has the encoders llmc uses, for error messages.
INSTALL_HINT = (
    "install imageio-ffmpeg>=0.6 (pip install imageio-ffmpeg; its static FFmpeg has "
    "libvvenc, libx265, libsvtav1, libaom-av1 and ffv1) or point $LLMC_FFMPEG at an FFmpeg "
    "built with the encoder"
)

#: Characters of FFmpeg's stderr quoted in a ``CodecError``.
STDERR_TAIL = 1500

#: Bytes per pixel of the raw pixel formats we feed (for the version probe's frame).
_BYTES_PER_PIXEL: dict[str, float] = {
    "gray": 1, "gray10le": 2, "gray12le": 2, "gray16le": 2, "yuv420p10le": 3,
}

#: How each encoder library announces its version in FFmpeg's verbose log.
_VERSION_PATTERNS: dict[str, str] = {
    "libvvenc": r"libvvenc version: (\S+)",
    "libx265": r"HEVC encoder version (\S+)",
    "libaom-av1": r"\[libaom-av1 @ [^\]]*\] (v\d\S*)",
    "libsvtav1": r"SVT-AV1 Encoder Lib (\S+)",
}


@dataclass(frozen=True)
class EncoderInfo:
    """Which encoder made a bitstream: recorded in the stored config for provenance."""

    name: str
    #: the encoder library's own version ("1.15.0-dev"), or FFmpeg's for built-in encoders
    version: str
    ffmpeg_version: str


def ffmpeg_exe() -> str:
    """Path of the FFmpeg executable; ``EncoderMissingError`` if there is none."""
    return _find_exe(os.environ.get(ENV_VAR) or None)


@functools.cache
def _find_exe(override: str | None) -> str:
    if override is not None:
        path = shutil.which(override) if os.sep not in override else override
        if path is None or not (os.path.isfile(path) and os.access(path, os.X_OK)):
            raise EncoderMissingError(f"${ENV_VAR}={override!r} is not an executable file")
        return path
    try:
        import imageio_ffmpeg
    except ImportError:
        raise EncoderMissingError(f"no FFmpeg binary: {INSTALL_HINT}") from None
    try:
        return imageio_ffmpeg.get_ffmpeg_exe()
    except RuntimeError as exc:
        raise EncoderMissingError(f"imageio-ffmpeg found no FFmpeg binary ({exc}): {INSTALL_HINT}") from None


def available_encoders() -> frozenset[str]:
    """Names of the video encoders the FFmpeg binary was built with (asked once per binary)."""
    return _encoders_of(ffmpeg_exe())


@functools.cache
def _encoders_of(exe: str) -> frozenset[str]:
    out = _run_text([exe, "-hide_banner", "-encoders"], "listing FFmpeg's encoders")
    # a legend, a " ------" line, then rows like " V....D libvvenc   libvvenc H.266 / VVC"
    _, _, table = out.partition(" ------")
    names = set()
    for line in table.splitlines():
        fields = line.split()
        if len(fields) >= 2 and len(fields[0]) == 6 and fields[0][0] == "V":
            names.add(fields[1])
    return frozenset(names)


def require_encoder(name: str) -> None:
    """Raise ``EncoderMissingError`` (naming what to install) unless ``name`` is available."""
    if name not in available_encoders():
        raise EncoderMissingError(
            f"the FFmpeg at {ffmpeg_exe()} has no {name!r} encoder: {INSTALL_HINT}"
        )


def ffmpeg_version() -> str:
    """FFmpeg's version string, e.g. ``n9.0.2-17-g2a571b6068-20260930``."""
    return _ffmpeg_version_of(ffmpeg_exe())


@functools.cache
def _ffmpeg_version_of(exe: str) -> str:
    out = _run_text([exe, "-hide_banner", "-version"], "asking FFmpeg's version")
    match = re.search(r"ffmpeg version (\S+)", out)
    return match.group(1) if match else "unknown"


def encoder_info(encoder: str, pix_fmt: str) -> EncoderInfo:
    """Name and version of ``encoder`` (probed once per binary with a 16x16 ``pix_fmt`` frame).

    FFmpeg does not list library versions, so we encode one tiny frame at verbose log
    level and read the line each library prints about itself.
    """
    return _encoder_info_of(ffmpeg_exe(), encoder, pix_fmt)


@functools.cache
def _encoder_info_of(exe: str, encoder: str, pix_fmt: str) -> EncoderInfo:
    require_encoder(encoder)
    ff_version = _ffmpeg_version_of(exe)
    pattern = _VERSION_PATTERNS.get(encoder)
    if pattern is None:  # an encoder inside libavcodec: FFmpeg's version is its version
        return EncoderInfo(encoder, ff_version, ff_version)
    frame_bytes = int(16 * 16 * _BYTES_PER_PIXEL.get(pix_fmt, 2))
    cmd = [*_encode_cmd(exe, encoder, pix_fmt, 16, 16, [], "null", loglevel="verbose"), "-"]
    try:
        proc = subprocess.run(cmd, input=bytes(frame_bytes), capture_output=True, check=False)
    except OSError as exc:
        raise EncoderMissingError(f"cannot run FFmpeg ({exe}): {exc}") from None
    match = re.search(pattern, proc.stderr.decode("utf-8", "replace"))
    return EncoderInfo(encoder, match.group(1) if match else "unknown", ff_version)


def encode_frame(
    encoder: str,
    pix_fmt: str,
    width: int,
    height: int,
    raw: bytes,
    codec_args: Sequence[str],
    muxer: str,
    *,
    threads: int = 0,
    timeout: float | None = None,
    what: str = "",
) -> bytes:
    """Encode one raw frame (``pix_fmt``, ``width`` x ``height``) and return the muxed bitstream.

    ``codec_args`` go after ``-c:v encoder``; ``muxer`` is the output format (``vvc``,
    ``hevc``, ``obu``, ``nut``...). ``threads`` > 0 caps the encoder's threads (0: its
    default). ``CodecError`` with FFmpeg's stderr tail if the encode fails, yields nothing
    or outlives ``timeout`` seconds (the process is then killed).
    """
    require_encoder(encoder)
    head = _encode_cmd(ffmpeg_exe(), encoder, pix_fmt, width, height, codec_args, muxer,
                       threads=threads)
    read_fd, write_fd = os.pipe()  # both non-inheritable: only the child's copy of write_fd
    try:
        try:
            proc = subprocess.Popen(
                [*head, f"pipe:{write_fd}"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, pass_fds=(write_fd,),
            )
        except OSError as exc:
            raise EncoderMissingError(f"cannot start FFmpeg ({head[0]}): {exc}") from None
        finally:
            os.close(write_fd)  # the child holds the only write end: EOF when it exits
        stream = _PipeDrain(read_fd)
    except BaseException:
        os.close(read_fd)
        raise
    try:
        console, err = proc.communicate(raw, timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        stream.join()
        raise CodecError(f"{what}: {encoder} took more than {timeout} s on a {width}x{height} "
                         f"frame; killed") from None
    except BaseException:  # e.g. KeyboardInterrupt: do not leave an orphan encoder behind
        proc.kill()
        proc.communicate()
        stream.join()
        raise
    out = stream.join()
    if console.strip():  # what the encoder library printed: kept out of the bitstream
        log.debug("%s: %s printed: %s", what, encoder, console.decode("utf-8", "replace").strip())
    if proc.returncode != 0 or not out:
        said = (console + err).decode("utf-8", "replace")[-STDERR_TAIL:]
        raise EncoderRefusedError(
            f"{what}: {encoder} failed (exit {proc.returncode}, {len(out)} bytes out) "
            f"on a {width}x{height} {pix_fmt} frame; FFmpeg said: {_first_error(said)}"
        )
    return out


def _first_error(said: str) -> str:
    """FFmpeg's first line that reports an error, without its ``[component @ 0x…]``
    prefixes (the rest repeats it: "Error flushing", "Task finished", "Terminating"); the
    whole tail only goes to the debug log. One line, for the one-line error contract."""
    log.debug("FFmpeg said: %s", said.strip())
    lines = [re.sub(r"^(\[[^]]*\]\s*)+", "", ln).strip() for ln in said.splitlines()]
    lines = [ln for ln in lines if ln]
    return next((ln for ln in lines if "rror" in ln), lines[-1] if lines else "nothing")


class _PipeDrain:
    """Read a pipe to EOF on a thread (the bitstream, while ``communicate`` runs stdio)."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._chunks: list[bytes] = []
        self._error: OSError | None = None
        self._thread = threading.Thread(target=self._run, name="llmc-ffmpeg-out", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while chunk := os.read(self._fd, 1 << 20):
                self._chunks.append(chunk)
        except OSError as exc:
            self._error = exc
        finally:
            os.close(self._fd)

    def join(self) -> bytes:
        """Everything read, once the writer closed its end (the process has exited)."""
        self._thread.join()
        if self._error is not None:
            raise CodecError(f"reading FFmpeg's output pipe failed: {self._error}")
        return b"".join(self._chunks)


def _encode_cmd(
    exe: str, encoder: str, pix_fmt: str, width: int, height: int,
    codec_args: Sequence[str], muxer: str, *, threads: int = 0, loglevel: str = "error",
) -> list[str]:
    """The command line up to, not including, the output (``-f muxer`` is its last option)."""
    cmd = [
        exe, "-hide_banner", "-nostdin", "-nostats", "-loglevel", loglevel,
        "-f", "rawvideo", "-pix_fmt", pix_fmt, "-s", f"{width}x{height}", "-r", "1",
        "-i", "pipe:0",
        "-an", "-map_metadata", "-1", "-fflags", "+bitexact",
        "-c:v", encoder, *codec_args,
    ]
    if threads > 0:
        cmd += ["-threads", str(threads)]
    return [*cmd, "-f", muxer]


def _run_text(cmd: list[str], doing: str) -> str:
    try:
        proc = subprocess.run(cmd, capture_output=True, check=False)
    except OSError as exc:
        raise EncoderMissingError(f"cannot run FFmpeg ({cmd[0]}) {doing}: {exc}") from None
    if proc.returncode != 0:
        tail = proc.stderr.decode("utf-8", "replace")[-STDERR_TAIL:]
        raise EncoderMissingError(f"FFmpeg ({cmd[0]}) failed {doing}: {tail}")
    return proc.stdout.decode("utf-8", "replace")
