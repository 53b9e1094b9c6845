"""Stored video blobs beyond their checksums: well-formed, and decoded alike by a second decoder.

A checksum proves a blob is the one the writer stored, not that the writer stored a valid
bitstream: until the bitstream got its own pipe, libvvenc's console messages could end up
after a VVC slice's data (``codecs/video/ffmpeg.py``), which FFmpeg's decoder ignores and
VVdeC rejects. ``check_tensor`` runs, for every frame of a video-coded tensor, the
structural check (``codecs/video/bitstream.py``) and every installed second decoder
(``codecs/video/crossdecode.py``), whose luma plane must hash to the stored
``frame_hashes`` entry (the plane FFmpeg decoded at pack time). ``verify --strict`` uses it.

``repair`` rewrites an archive whose blobs carry such console text: it cuts the text off,
keeps the cut only if it is a well-formed bitstream that FFmpeg and every installed second
decoder decode to the stored luma hash (so the tensor decodes bit for bit as before), and
copies everything else unchanged.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from llmc_format.codecs.base import ArraySpec
from llmc_format.codecs.stages import final_stage
from llmc_format.codecs.video import bitstream, crossdecode
from llmc_format.codecs.video.codecs import StoredFrame, VideoCodec, luma_hash
from llmc_format.container.index import BlobRef, TensorEntry
from llmc_format.container.reader import Reader
from llmc_format.container.writer import Writer
from llmc_format.errors import BitstreamError, CodecError, LlmcError

#: how ``second_decode`` starts its verdict when the decoder refused the blob
REJECTED = "rejected: "


@dataclass
class BlobCheck:
    """What the strict checks found for one stored frame."""

    tensor: str
    frame: int
    codec: str
    length: int
    #: the structural and decoding problems; empty if the blob passed everything run
    problems: list[str] = field(default_factory=list)
    #: second decoder ("vvdec 3.3.0") -> "agrees" or what went wrong
    decoders: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass(frozen=True)
class VideoFrame:
    """A stored frame of a video-coded tensor: its codec, picture and blob reference."""

    tensor: str
    codec: VideoCodec
    frame: StoredFrame
    ref: BlobRef

    @property
    def what(self) -> str:
        return f"tensor {self.tensor!r} frame {self.frame.index}"


def video_frames(entry: TensorEntry) -> list[VideoFrame]:
    """The frames of ``entry`` if its last stage is a video codec (else none; aliases none)."""
    if entry.alias_of is not None or not entry.pipeline:
        return []
    codec, spec = final_stage(entry.pipeline, ArraySpec(entry.dtype, entry.shape, entry.name))
    if not isinstance(codec, VideoCodec):
        return []
    frames = codec.stored_frames(spec)
    refs = entry.stage_blobs(len(entry.pipeline) - 1)
    if len(refs) != len(frames):
        raise CodecError(f"tensor {entry.name!r}: {len(refs)} blobs stored, the frame geometry "
                         f"needs {len(frames)}")
    return [VideoFrame(entry.name, codec, f, r) for f, r in zip(frames, refs, strict=True)]


def check_frame(vf: VideoFrame, blob: bytes,
                decoders: list[crossdecode.SecondDecoder]) -> BlobCheck:
    """Structure of ``blob``, then every second decoder against the stored luma hash."""
    check = BlobCheck(vf.tensor, vf.frame.index, vf.codec.codec_id, len(blob))
    try:
        bitstream.check(vf.codec.codec_id, blob, vf.what)
    except BitstreamError as exc:
        check.problems.append(str(exc))
    for dec in decoders:
        verdict = second_decode(dec, vf, blob)
        check.decoders[dec.describe()] = verdict
        if verdict.startswith(REJECTED):  # the decoder's error names the frame and itself
            check.problems.append(verdict[len(REJECTED):])
        elif verdict != "agrees":
            check.problems.append(f"{vf.what}: {dec.describe()}: {verdict}")
    return check


def second_decode(dec: crossdecode.SecondDecoder, vf: VideoFrame, blob: bytes,
                  reference: np.ndarray | None = None) -> str:
    """"agrees" if ``dec`` decodes ``blob`` to the stored luma (and to ``reference``)."""
    f = vf.frame
    try:
        plane = crossdecode.decode_luma(dec, blob, f.width, f.height, f.depth, f.chroma420,
                                        vf.what)
    except LlmcError as exc:
        return f"{REJECTED}{exc}"
    if reference is not None and not np.array_equal(plane, reference):
        diff = int(np.count_nonzero(plane != reference))
        return f"differs from FFmpeg's decode in {diff} of {plane.size} luma samples"
    if luma_hash(plane) != f.luma_hash:
        return "decodes to another luma plane than the stored frame hash"
    return "agrees"


def check_tensor(reader: Reader, name: str) -> tuple[list[BlobCheck], list[str]]:
    """Strict checks of every frame of tensor ``name`` (or of the tensor it is an alias of):
    ``(checks, decoders used)``."""
    entry = reader.resolve(name)
    frames = video_frames(entry)
    decoders = crossdecode.find_all(frames[0].codec.codec_id) if frames else []
    checks = [check_frame(vf, reader.read_blob(vf.ref, vf.what), decoders) for vf in frames]
    return checks, [d.describe() for d in decoders]


# ------------------------------------------------------------------------------ repair


@dataclass
class RepairReport:
    source: str
    output: str | None = None
    #: tensor -> [(frame, bytes removed, decoders that confirmed the cut blob)]
    repaired: dict[str, list[tuple[int, int, list[str]]]] = field(default_factory=dict)

    @property
    def blobs(self) -> int:
        return sum(len(v) for v in self.repaired.values())

    @property
    def bytes_removed(self) -> int:
        return sum(n for v in self.repaired.values() for _, n, _ in v)


def repair_blob(vf: VideoFrame, blob: bytes,
                decoders: list[crossdecode.SecondDecoder]) -> tuple[bytes, list[str]] | None:
    """``blob`` without appended console text, and who confirmed it; None if it is valid.

    ``BitstreamError`` if the blob is malformed in another way, or no cut decodes (with
    FFmpeg and every second decoder) to the stored luma hash.
    """
    try:
        bitstream.check(vf.codec.codec_id, blob, vf.what)
        return None
    except BitstreamError as exc:
        problem = str(exc)
    for cut_at in bitstream.console_text_candidates(blob):
        cut = blob[:cut_at]
        try:
            bitstream.check(vf.codec.codec_id, cut, vf.what)
            if luma_hash(vf.codec.decode_luma(cut, vf.frame, vf.what)) != vf.frame.luma_hash:
                continue
        except CodecError:
            continue
        if all(second_decode(d, vf, cut) == "agrees" for d in decoders):
            return cut, ["ffmpeg", *(d.describe() for d in decoders)]
    raise BitstreamError(f"{problem}; no lossless repair found (no cut of trailing console "
                         "text decodes to the stored frame hash)")


def repair(src: str | os.PathLike[str], dst: str | os.PathLike[str], *,
           tool: str = "", progress: Callable[[str, int, int], None] | None = None,
           ) -> RepairReport:
    """Write ``dst``: ``src`` with every repairable blob repaired, all else copied as is.

    Nothing is written when no blob needs repair (``report.output`` is then None). Other
    damage (checksums, malformed blobs without console text) raises the reader's error.
    """
    report = RepairReport(str(src))
    with Reader(src) as r:
        fixes: dict[tuple[str, int], bytes] = {}
        entries = r.index.tensors
        for i, entry in enumerate(entries):
            frames = video_frames(entry)
            decoders = crossdecode.find_all(frames[0].codec.codec_id) if frames else []
            for vf in frames:
                fixed = repair_blob(vf, r.read_blob(vf.ref, vf.what), decoders)
                if fixed is not None:
                    fixes[(entry.name, vf.ref.offset)] = fixed[0]
                    report.repaired.setdefault(entry.name, []).append(
                        (vf.frame.index, vf.ref.length - len(fixed[0]), fixed[1]))
            if progress:
                progress(entry.name, i + 1, len(entries))
        if not fixes:
            return report
        metadata: dict[str, Any] = dict(r.metadata)
        metadata["repaired"] = {
            "tool": tool, "blobs": report.blobs, "bytes_removed": report.bytes_removed,
            "what": "console text an encoder printed after the last coded byte of a bitstream",
            "confirmed_by": sorted({d for v in report.repaired.values() for _, _, ds in v
                                    for d in ds}),
        }
        with Writer(dst, alignment=r.header.alignment, metadata=metadata) as w:
            for entry in entries:
                w.add_tensor(_copy_entry(r, w, entry, fixes))
            for a in r.attachments():
                w.add_attachment(a.name, r.read_attachment(a.name), compress=a.encoding == "zstd")
    report.output = str(Path(dst))
    return report


def _copy_entry(r: Reader, w: Writer, entry: TensorEntry,
                fixes: dict[tuple[str, int], bytes]) -> TensorEntry:
    if entry.alias_of is not None:
        return entry
    blobs = []
    for ref in entry.blobs:
        data = fixes.get((entry.name, ref.offset))
        blobs.append(w.add_blob(r.read_blob(ref, f"tensor {entry.name!r}") if data is None
                                else data, ref.stage))
    return dataclasses.replace(entry, blobs=tuple(blobs))


def iter_archive_frames(reader: Reader) -> Iterator[VideoFrame]:
    """Every stored video frame of an archive, tensor by tensor."""
    for entry in reader.index.tensors:
        yield from video_frames(entry)
