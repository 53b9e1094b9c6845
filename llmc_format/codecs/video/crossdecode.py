"""A second, independent decoder per lossy codec: does another implementation agree?

llmc decodes with FFmpeg's decoders (PyAV). An archive meant to outlive that software
must decode identically elsewhere, and a lenient decoder can hide a non-conformant
bitstream (FFmpeg ignored libvvenc console text appended to a slice; VVdeC rejects it).
So ``verify --strict``, ``repack --repair`` and ``tools/cross_decode.py`` decode blobs
again with:

| codec | decoder | how it is found |
|---|---|---|
| ``vvc`` | Fraunhofer VVdeC (``vvdecapp``) | ``$LLMC_VVDEC``, else ``vvdecapp`` on ``PATH`` |
| ``hevc`` | libde265 (``de265.py``: ctypes, child process) | ``$LLMC_LIBDE265``, else ``libde265.so.0`` |
| ``av1`` | libaom (``aomdec``) | ``$LLMC_AOMDEC``, else ``aomdec`` on ``PATH`` |
| ``av1`` | dav1d (``dav1d``) | ``$LLMC_DAV1D``, else ``dav1d`` on ``PATH`` |

(docs/decoders.md says how to install each.) PyAV decodes ``av1`` with libdav1d, so the
``dav1d`` tool is the same decoder library, not an independent one (it still checks the
blob outside FFmpeg's parser); ``aomdec`` is the independent one.

Each decode runs in its own process on files in a private temporary directory (created
exclusively, removed always), with a timeout; the output file's size is checked against
the expected picture before it is read. Failures are ``BitstreamError`` (the second
decoder rejected the blob, or gave another picture size) or ``EncoderMissingError``.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from llmc_format.errors import BitstreamError, EncoderMissingError

#: seconds one decode may take (a 4096x4096 VVC frame decodes in well under one)
DEFAULT_TIMEOUT = 120.0
#: characters of a decoder's messages quoted in an error
MESSAGE_TAIL = 600

#: per codec, the second decoders tried, independent ones first: (name, env var, program)
DECODERS: dict[str, tuple[tuple[str, str, str], ...]] = {
    "vvc": (("vvdec", "LLMC_VVDEC", "vvdecapp"),),
    "hevc": (("libde265", "LLMC_LIBDE265", ""),),
    "av1": (("libaom", "LLMC_AOMDEC", "aomdec"), ("dav1d", "LLMC_DAV1D", "dav1d")),
}


@dataclass(frozen=True)
class SecondDecoder:
    """An installed second decoder for ``codec_id``."""

    codec_id: str
    #: "vvdec", "libde265", "libaom" or "dav1d"
    name: str
    #: executable (or, for libde265, the Python running its child) and its fixed arguments
    command: tuple[str, ...]
    version: str

    def describe(self) -> str:
        return f"{self.name} {self.version}"


def find_all(codec_id: str) -> list[SecondDecoder]:
    """Every installed second decoder for ``codec_id`` (independent ones first)."""
    found = []
    for name, env, program in DECODERS.get(codec_id, ()):
        dec = _find(codec_id, name, program, os.environ.get(env) or None)
        if dec is not None:
            found.append(dec)
    return found


def find(codec_id: str) -> SecondDecoder | None:
    """The preferred installed second decoder for ``codec_id``, or None."""
    found = find_all(codec_id)
    return found[0] if found else None


@functools.cache
def _find(codec_id: str, name: str, program: str, override: str | None) -> SecondDecoder | None:
    if name == "libde265":
        # the script alone (stdlib only), isolated from the environment's Python settings
        cmd: tuple[str, ...] = (sys.executable, "-I", "-S", str(Path(__file__).with_name("de265.py")))
        env = {**os.environ, **({"LLMC_LIBDE265": override} if override else {})}
        version = _run_version([*cmd, "--version"], env)
        return None if version is None else SecondDecoder(codec_id, name, cmd, version)
    exe = override or shutil.which(program)
    if exe is None or not (os.path.isfile(exe) and os.access(exe, os.X_OK)):
        return None
    if name == "libaom":  # aomdec prints its version only while decoding: ask the library
        version = _libaom_version()
        return None if version is None else SecondDecoder(codec_id, name, (exe,), version)
    text = _run_version([exe, "--version"], None)
    if text is None:
        return None
    m = re.search(r"version (\S+)", text) if name == "vvdec" else None
    version = m.group(1) if m else (text.split() or ["unknown"])[0]
    return SecondDecoder(codec_id, name, (exe,), version)


def _libaom_version() -> str | None:
    import ctypes
    import ctypes.util

    path = ctypes.util.find_library("aom")
    if path is None:
        return None
    try:
        fn = ctypes.CDLL(path).aom_codec_version_str
    except (OSError, AttributeError):
        return None
    fn.restype, fn.argtypes = ctypes.c_char_p, []
    return fn().decode("ascii", "replace")


def _run_version(cmd: list[str], env: dict[str, str] | None) -> str | None:
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=30, check=False, env=env)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (proc.stdout + proc.stderr).decode("utf-8", "replace").strip()
    return text if proc.returncode == 0 and text else None


def decode_luma(decoder: SecondDecoder, blob: bytes, width: int, height: int, depth: int,
                chroma420: bool, what: str = "blob",
                timeout: float = DEFAULT_TIMEOUT) -> np.ndarray:
    """The ``(height, width)`` uint16 luma plane ``decoder`` makes of ``blob``.

    ``depth``: the coded bit depth (samples take 2 bytes above 8 bits); ``chroma420``:
    the picture has two 4:2:0 chroma planes (else it is monochrome).
    """
    bps = 1 if depth <= 8 else 2
    luma_bytes = width * height * bps
    with tempfile.TemporaryDirectory(prefix="llmc-xdec-") as tmp:
        src, dst = Path(tmp) / "in.bin", Path(tmp) / "out.yuv"
        fd = os.open(src, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(blob)
        cmd = _command(decoder, src, dst)
        try:
            proc = subprocess.run(cmd, capture_output=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise BitstreamError(f"{what}: {decoder.name} took more than {timeout} s") from None
        except OSError as exc:
            raise EncoderMissingError(f"cannot run {decoder.name} ({cmd[0]}): {exc}") from None
        lines = (proc.stdout + proc.stderr).decode("utf-8", "replace").splitlines()
        said = " | ".join(x.strip() for x in lines if x.strip())[-MESSAGE_TAIL:]
        if proc.returncode != 0 or not dst.is_file():
            raise BitstreamError(f"{what}: {decoder.describe()} rejected the blob (exit "
                                 f"{proc.returncode}): {said}")
        if decoder.name == "libde265":
            return _read_de265(dst, width, height, depth, what)
        size = dst.stat().st_size
        chroma = 2 * ((width + 1) // 2) * ((height + 1) // 2) * bps if chroma420 else 0
        if size != luma_bytes + chroma:
            raise BitstreamError(f"{what}: {decoder.describe()} wrote {size} bytes, expected one "
                                 f"{width}x{height} picture ({luma_bytes + chroma} bytes)")
        with open(dst, "rb") as f:
            raw = f.read(luma_bytes)
    return _plane(raw, width, height, bps)


def _command(decoder: SecondDecoder, src: Path, dst: Path) -> list[str]:
    if decoder.name == "vvdec":
        return [*decoder.command, "-b", str(src), "-o", str(dst), "-t", "1", "-v", "1"]
    if decoder.name == "dav1d":
        return [*decoder.command, "-q", "-i", str(src), "-o", str(dst), "--muxer", "yuv",
                "--threads", "1"]
    if decoder.name == "libaom":
        return [*decoder.command, "--rawvideo", "-t", "1", "-o", str(dst), str(src)]
    return [*decoder.command, str(src), str(dst)]


def _read_de265(path: Path, width: int, height: int, depth: int, what: str) -> np.ndarray:
    bps = 1 if depth <= 8 else 2
    with open(path, "rb") as f:
        header = f.readline(64).split()
        got = tuple(int(v) for v in header) if len(header) == 3 else ()
        if got != (width, height, depth):
            raise BitstreamError(f"{what}: libde265 decoded a picture of (width, height, bits) "
                                 f"{got}, expected {(width, height, depth)}")
        raw = f.read(width * height * bps + 1)
    if len(raw) != width * height * bps:
        raise BitstreamError(f"{what}: libde265 wrote {len(raw)} luma bytes")
    return _plane(raw, width, height, bps)


def _plane(raw: bytes, width: int, height: int, bps: int) -> np.ndarray:
    dtype = np.uint8 if bps == 1 else np.dtype("<u2")
    return np.frombuffer(raw, dtype=dtype).reshape(height, width).astype(np.uint16)
