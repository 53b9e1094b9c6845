"""Decode one HEVC blob with libde265 (through ctypes), run as a child process.

    python de265.py IN OUT      # luma plane of IN's one picture
    python de265.py --version   # libde265's version

(a stand-alone script: it imports nothing but the standard library)

libde265 is an HEVC decoder independent of FFmpeg's (``crossdecode.py`` uses it as the
second decoder). Its command-line example ``dec265`` (Debian ``libde265-examples``
1.0.11) decodes monochrome pictures whose width is not a multiple of 16 but then aborts
(``std::bad_alloc``) writing their output, so the library is called directly. It runs in
its own process so that a crash of C code on a hostile blob is a failed check, not a
dead reader. OUT receives a little header (``width height bits``, ASCII, one line) and
the luma samples, row by row, as little-endian uint16 (or uint8 at 8 bits). Exit status
1 and one line on stderr when the blob does not decode to exactly one picture, or when
the decoder warns.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

#: the shared library; ``$LLMC_LIBDE265`` may name another
LIBRARY = "libde265.so.0"
ENV_VAR = "LLMC_LIBDE265"
#: de265_error codes: success, and "waiting for input" (the stream is exhausted)
_OK, _WAITING_FOR_INPUT = 0, 13


def load() -> ctypes.CDLL:
    """libde265 with the prototypes used here (every pointer typed: no truncation)."""
    lib = ctypes.CDLL(os.environ.get(ENV_VAR) or ctypes.util.find_library("de265") or LIBRARY)
    vp, i32 = ctypes.c_void_p, ctypes.c_int
    protos: dict[str, tuple[object, list[object]]] = {
        "de265_get_version": (ctypes.c_char_p, []),
        "de265_new_decoder": (vp, []),
        "de265_free_decoder": (i32, [vp]),
        "de265_push_data": (i32, [vp, ctypes.c_char_p, i32, ctypes.c_int64, vp]),
        "de265_flush_data": (i32, [vp]),
        "de265_decode": (i32, [vp, ctypes.POINTER(i32)]),
        "de265_get_warning": (i32, [vp]),
        "de265_get_error_text": (ctypes.c_char_p, [i32]),
        "de265_get_next_picture": (vp, [vp]),
        "de265_get_image_width": (i32, [vp, i32]),
        "de265_get_image_height": (i32, [vp, i32]),
        "de265_get_bits_per_pixel": (i32, [vp, i32]),
        "de265_get_image_plane": (ctypes.POINTER(ctypes.c_uint8), [vp, i32, ctypes.POINTER(i32)]),
    }
    for name, (restype, argtypes) in protos.items():
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = restype, argtypes
    return lib


def decode(lib: ctypes.CDLL, data: bytes) -> tuple[int, int, int, bytes]:
    """``(width, height, bits, luma bytes)`` of the one picture in ``data``; ValueError else."""
    ctx = lib.de265_new_decoder()
    if not ctx:
        raise ValueError("libde265 could not create a decoder")
    pictures: list[tuple[int, int, int, bytes]] = []
    try:
        for err in (lib.de265_push_data(ctx, data, len(data), 0, None), lib.de265_flush_data(ctx)):
            if err != _OK:
                raise ValueError(lib.de265_get_error_text(err).decode())
        more = ctypes.c_int(1)
        while more.value:
            err = lib.de265_decode(ctx, ctypes.byref(more))
            warning = lib.de265_get_warning(ctx)
            if warning != _OK:
                raise ValueError(f"warning: {lib.de265_get_error_text(warning).decode()}")
            img = lib.de265_get_next_picture(ctx)
            if img:
                pictures.append(_luma(lib, img))
            if err == _WAITING_FOR_INPUT:
                break
            if err != _OK:
                raise ValueError(lib.de265_get_error_text(err).decode())
        while img := lib.de265_get_next_picture(ctx):
            pictures.append(_luma(lib, img))
    finally:
        lib.de265_free_decoder(ctx)
    if len(pictures) != 1:
        raise ValueError(f"{len(pictures)} pictures decoded, expected exactly 1")
    return pictures[0]


def _luma(lib: ctypes.CDLL, img: int) -> tuple[int, int, int, bytes]:
    width, height = lib.de265_get_image_width(img, 0), lib.de265_get_image_height(img, 0)
    bits = lib.de265_get_bits_per_pixel(img, 0)
    stride = ctypes.c_int()
    plane = lib.de265_get_image_plane(img, 0, ctypes.byref(stride))
    row = width * (1 if bits <= 8 else 2)  # stride is in bytes
    if not plane or width <= 0 or height <= 0 or stride.value < row:
        raise ValueError(f"bad picture: {width}x{height}, stride {stride.value}")
    base = ctypes.addressof(plane.contents)
    return width, height, bits, b"".join(
        ctypes.string_at(base + y * stride.value, row) for y in range(height))


def main(argv: list[str]) -> int:
    out = os.fdopen(os.dup(1), "wb")  # our output; the library's prints go to stderr
    os.dup2(2, 1)
    try:
        lib = load()
        if argv == ["--version"]:
            out.write(lib.de265_get_version() + b"\n")
            return 0
        if len(argv) != 2:
            print(__doc__, file=sys.stderr)
            return 2
        with open(argv[0], "rb") as f:
            data = f.read()
        width, height, bits, luma = decode(lib, data)
        fd = os.open(argv[1], os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(f"{width} {height} {bits}\n".encode() + luma)
        return 0
    except (OSError, ValueError) as exc:
        print(f"libde265: {exc}", file=sys.stderr)
        return 1
    finally:
        out.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
