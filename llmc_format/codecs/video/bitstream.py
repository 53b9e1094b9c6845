"""Structural validity of one stored video blob, without decoding it.

A blob must be exactly one self-contained bitstream and nothing else. FFmpeg's decoders
are lenient (they ignore bytes after a slice's last coded bit), so a blob that decodes
in llmc may still be rejected by another conforming decoder: this module is the cheap,
decoder-independent half of the check (the other half is a second decoder,
``crossdecode.py``). It runs on every blob at pack time and in ``verify --strict``.

- VVC and HEVC (ITU-T H.266 / H.265 Annex B byte streams): the blob starts with a start
  code (after optional zero bytes), every NAL unit has a sane two-byte header (forbidden
  bit 0, no reserved type, layer id or temporal id), no forbidden three-byte pattern
  (``00 00 00``/``00 00 02`` inside a NAL unit, ``00 00 03`` followed by a byte above 3),
  every NAL unit's RBSP ends in its stop bit (the last byte, after removing emulation
  prevention and a slice's ``cabac_zero_words``, is non-zero), parameter sets precede
  the first slice, and there is a slice.
- AV1 (low-overhead OBU stream, as FFmpeg's ``obu`` muxer writes it): OBUs follow one
  another to exactly the end of the blob, each with its size field, no reserved type or
  bit, trailing bits where the syntax has them, a sequence header and a frame.
- FFV1 in NUT: the NUT file signature (FFV1 slices carry their own CRCs).

None of this finds bytes appended *inside* the last slice NAL unit's CABAC payload: only
decoding the slice finds where its data ends. The one known source of such bytes is
console text an encoder library printed into the bitstream (libvvenc wrote
``Configuration warning: ...`` to stdout, which llmc read the bitstream from until the
bitstream got a pipe of its own): ``console_text_start`` recognises that text (a run of
at least ``MIN_CONSOLE_TEXT`` printable bytes ending in a newline, at the end of the
blob), which a real slice ends with with a probability below 1e-8.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from llmc_format.errors import BitstreamError

#: a trailing run of console text must be at least this long to be called one
MIN_CONSOLE_TEXT = 16
_CONSOLE_RUN = re.compile(rb"[\t\r\n\x20-\x7e]+\Z")
#: where a console message may start: a word like ``Configuration`` or ``Warning``
_LINE_START = re.compile(rb"[A-Z][a-z]")
#: messages libvvenc is known to print (preferred over a guessed line start)
KNOWN_MESSAGES = (b"Configuration warning", b"Parameter Check Error", b"Warning", b"Error")

#: the NUT container's file signature (FFV1 blobs)
NUT_SIGNATURE = b"nut/multimedia container\x00"


@dataclass(frozen=True)
class NalUnit:
    """One NAL unit of an Annex B stream: where its bytes lie and its header fields."""

    offset: int  # of the NAL unit header, in the blob
    end: int  # one past its last byte (trailing zero bytes excluded)
    nal_type: int
    layer_id: int
    temporal_id_plus1: int


#: per codec: VCL types, reserved types, parameter-set types a blob must carry, max layer id
_NAL_RULES: dict[str, tuple[range, frozenset[int], frozenset[int], int]] = {
    # H.266 Table 5: 0-3 VCL, 4-6 RSV_VCL, 7-10 IRAP/GDR, 11 RSV_IRAP, 12-25 non-VCL,
    # 26-27 RSV_NVCL, 28-31 unspecified; nuh_layer_id 56..63 reserved; SPS 15, PPS 16
    "vvc": (range(0, 12), frozenset({4, 5, 6, 11, 26, 27}), frozenset({15, 16}), 55),
    # H.265 Table 7-1: 0-9 VCL, 10-15 RSV_VCL, 16-21 IRAP, 22-23 RSV_IRAP, 24-31 RSV_VCL,
    # 32-40 non-VCL, 41-47 reserved, 48-63 unspecified; nuh_layer_id 63 reserved
    "hevc": (range(0, 32), frozenset({*range(10, 16), *range(22, 32), *range(41, 48)}),
             frozenset({32, 33, 34}), 62),
}


def check(codec_id: str, blob: bytes, what: str = "blob") -> None:
    """Raise ``BitstreamError`` unless ``blob`` is one well-formed ``codec_id`` bitstream."""
    if codec_id in _NAL_RULES:
        parse_annexb(codec_id, blob, what)
    elif codec_id == "av1":
        parse_obus(blob, what)
    elif codec_id == "ffv1":
        if not blob.startswith(NUT_SIGNATURE):
            raise BitstreamError(f"{what}: not a NUT stream (no NUT file signature)")
    else:
        raise BitstreamError(f"{what}: no bitstream rules for codec {codec_id!r}")
    start = console_text_start(blob)
    if start is not None:
        raise BitstreamError(
            f"{what}: console text after the bitstream's last coded byte, from offset "
            f"{start} of {len(blob)}: {blob[start:start + 60]!r} (an encoder printed into "
            f"the bitstream; `llmc repack --repair` strips it)")


def parse_annexb(codec_id: str, blob: bytes, what: str = "blob") -> list[NalUnit]:
    """The NAL units of an Annex B byte stream, every one checked (see the module doc)."""
    vcl, reserved, needed, max_layer = _NAL_RULES[codec_id]
    starts = [m.end() for m in re.finditer(rb"\x00\x00\x01", blob)]
    if not starts:
        raise BitstreamError(f"{what}: no Annex B start code in {len(blob)} bytes")
    first = starts[0] - 3
    if any(blob[:first]):
        raise BitstreamError(f"{what}: {first} bytes before the first start code are not "
                             "leading zero bytes")
    units: list[NalUnit] = []
    seen: set[int] = set()
    for i, begin in enumerate(starts):
        stop = starts[i + 1] - 3 if i + 1 < len(starts) else len(blob)
        end = stop
        while end > begin and blob[end - 1] == 0:  # trailing_zero_8bits / a 4-byte start code
            end -= 1
        where = f"{what}: NAL unit {i} at offset {begin}"
        if end - begin < 3:
            raise BitstreamError(f"{where}: {end - begin} bytes, too short for a header and "
                                 "a payload")
        h0, h1 = blob[begin], blob[begin + 1]
        if codec_id == "vvc":
            bad_bits = h0 >> 6  # forbidden_zero_bit, nuh_reserved_zero_bit
            layer, nal_type, tid1 = h0 & 0x3F, h1 >> 3, h1 & 7
        else:
            bad_bits = h0 >> 7  # forbidden_zero_bit
            nal_type, layer, tid1 = (h0 >> 1) & 0x3F, ((h0 & 1) << 5) | (h1 >> 3), h1 & 7
        if bad_bits:
            raise BitstreamError(f"{where}: forbidden or reserved header bit set "
                                 f"({h0:02x} {h1:02x})")
        if nal_type in reserved or layer > max_layer or tid1 == 0:
            raise BitstreamError(f"{where}: reserved header value (type {nal_type}, layer "
                                 f"{layer}, temporal id + 1 = {tid1})")
        if nal_type in vcl and not needed <= seen:
            raise BitstreamError(f"{where}: a slice before the parameter sets "
                                 f"{sorted(needed - seen)}: the blob does not decode alone")
        seen.add(nal_type)
        _check_payload(blob, begin, end, nal_type in vcl, where)
        units.append(NalUnit(begin, end, nal_type, layer, tid1))
    if not any(u.nal_type in vcl for u in units):
        raise BitstreamError(f"{what}: no slice NAL unit")
    return units


def _check_payload(blob: bytes, begin: int, end: int, is_vcl: bool, where: str) -> None:
    """Emulation prevention patterns and the RBSP stop bit of one NAL unit."""
    nal = blob[begin:end]
    for m in re.finditer(rb"\x00\x00[\x00-\x03]", nal):
        third = nal[m.end() - 1]
        if third != 3:
            raise BitstreamError(f"{where}: forbidden byte pattern 00 00 {third:02x} at "
                                 f"offset {begin + m.start()}")
        if m.end() < len(nal) and nal[m.end()] > 3:
            raise BitstreamError(f"{where}: emulation prevention byte 03 followed by "
                                 f"{nal[m.end()]:02x} at offset {begin + m.end()}")
    rbsp = re.sub(rb"\x00\x00\x03", b"\x00\x00", nal)
    if is_vcl:  # cabac_zero_words (0x0000) may follow a slice's trailing bits
        rbsp = rbsp.rstrip(b"\x00")
    if len(rbsp) < 3 or rbsp[-1] == 0:
        raise BitstreamError(f"{where}: the RBSP does not end with its stop bit")


def console_text_start(blob: bytes) -> int | None:
    """Offset where console text appended to ``blob`` starts, or None (see module doc).

    The start is a known libvvenc message if one begins in the first bytes of the run,
    else the first ``[A-Z][a-z]`` there; a caller that cuts there must check that the
    cut blob still decodes to the same picture (``repair``), as the run may begin with a
    few printable bytes of real data.
    """
    cands = console_text_candidates(blob)
    return cands[0] if cands else None


def console_text_candidates(blob: bytes) -> list[int]:
    """Every plausible start of trailing console text, most likely first (may be empty)."""
    m = _CONSOLE_RUN.search(blob)
    if m is None or m.end() - m.start() < MIN_CONSOLE_TEXT or not blob.endswith(b"\n"):
        return []
    run_start = m.start()
    head = blob[run_start:run_start + MIN_CONSOLE_TEXT]  # real data may lend a few bytes
    known = sorted({run_start + head.find(k) for k in KNOWN_MESSAGES if head.find(k) >= 0})
    guessed = [run_start + g.start() for g in _LINE_START.finditer(head)]
    ordered = known + [g for g in guessed if g not in known]
    return [p for p in ordered if p > 0 and len(blob) - p >= MIN_CONSOLE_TEXT // 2]


def parse_obus(blob: bytes, what: str = "blob") -> list[tuple[int, int, int]]:
    """The OBUs (type, payload offset, payload size) of a low-overhead AV1 stream, checked."""
    obus: list[tuple[int, int, int]] = []
    pos = 0
    while pos < len(blob):
        where = f"{what}: OBU {len(obus)} at offset {pos}"
        header = blob[pos]
        obu_type, has_ext, has_size = (header >> 3) & 0xF, (header >> 2) & 1, (header >> 1) & 1
        if header & 0x81:
            raise BitstreamError(f"{where}: forbidden or reserved header bit set ({header:02x})")
        if obu_type in (0, *range(9, 15)):
            raise BitstreamError(f"{where}: reserved OBU type {obu_type}")
        if not has_size:
            raise BitstreamError(f"{where}: no size field (a low-overhead stream needs it)")
        pos += 1 + has_ext
        size, pos = _leb128(blob, pos, where)
        if pos + size > len(blob):
            raise BitstreamError(f"{where}: payload of {size} bytes runs past the end of the "
                                 f"{len(blob)}-byte blob")
        # trailing_bits close every payload but tile data (types 4, 6, 8) and padding (15)
        if obu_type not in (4, 6, 8, 15) and size and blob[pos + size - 1] == 0:
            raise BitstreamError(f"{where}: payload does not end with its trailing one bit")
        obus.append((obu_type, pos, size))
        pos += size
    types = [t for t, _, _ in obus]
    if 1 not in types or not (6 in types or 4 in types):
        raise BitstreamError(f"{what}: an AV1 blob needs a sequence header and a frame, "
                             f"found OBU types {types}")
    return obus


def _leb128(blob: bytes, pos: int, where: str) -> tuple[int, int]:
    value = 0
    for i in range(8):
        if pos + i >= len(blob):
            raise BitstreamError(f"{where}: size field runs past the end of the blob")
        byte = blob[pos + i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            if value >= 1 << 32:
                raise BitstreamError(f"{where}: OBU size {value} exceeds 2**32 - 1")
            return value, pos + i + 1
    raise BitstreamError(f"{where}: size field longer than 8 bytes")
