"""Video codecs as array→bytes stages: ``vvc``, ``hevc``, ``av1`` (lossy) and ``ffv1`` (lossless).

Input: a ``uint16`` array of integers in ``[0, 2**bits)`` (the affine stage's output),
viewed as a matrix and cut into frames by ``frames.py``. Output: one blob per frame, each
a complete bitstream (its own parameter sets, one intra frame), so any frame decodes
alone and a row range needs only the frames covering it.

Samples. A lossy codec works at a fixed bit depth ``depth`` (10 for VVC; 10 or 12 for
HEVC and libaom AV1; 10 for SVT-AV1): values are coded as ``v << (depth - bits)`` so
``qp`` means the same relative step whatever ``bits`` is, and decoded as
``min((s + half) >> shift, 2**bits - 1)`` with ``half = (1 << shift) >> 1``. VVC and
SVT-AV1 only take 4:2:0, so the weights go in luma and both chroma planes are the
constant mid-grey ``1 << (depth - 1)`` (it costs a few bytes). FFV1 is lossless and
stores the values unshifted at the smallest depth (8, 10, 12, 16) >= ``bits``.

Encoding runs one FFmpeg process per frame. Measured with libvvenc (``-preset faster``,
``-g 1``, eight 384x384 frames): one 8-frame process was slower than eight 1-frame
processes (3.6 s vs 3.1 s wall), and it codes frames at another effective QP than a lone
frame (at ``qp`` 30: 63.6 kB and integer MSE 502 per frame vs 70.5 kB and 281; a
2-frame stream gives 70.4 kB / 304), so ``qp`` would depend on the tensor's size. A
process per frame keeps ``qp`` meaning one thing and every blob self-contained (own
parameter sets, IDR). Start-up costs ~0.07 s wall / 0.11 s CPU per libvvenc process
(~0.02 s for the others), which is why frames default to ~1 M pixels: VVC then spends
~5% of its CPU starting up.

Every blob is checked structurally (``bitstream.py``: NAL units or OBUs, nothing after
the last one; ``BitstreamError`` otherwise) and decoded once right after it is encoded,
and the xxh3-64 of the decoded luma plane is stored (``frame_hashes``). Video decoding
is bit-exact by standard, so a later decode that yields anything else is damage the
decoder concealed (HEVC conceals a truncated slice without error), a non-conformant
decoder, or a blob swapped in from another tensor: all ``CodecError``. The check costs a
decode, ~1/50 of a VVC encode.

Stored config (plain data): the parameters below (for VVC also ``vvenc_params``, the
encoder's extra settings) plus, after encoding, ``frames`` (the geometry), ``pix_fmt``
(coded pixel format), ``frame_hashes``, ``encoder``, ``encoder_version`` and
``ffmpeg_version``. ``threads`` is a runtime knob (does not
change the bitstream) and is not stored.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import xxhash

from llmc_format.codecs.base import (
    ArrayBytesCodec,
    ArraySpec,
    BlobFetcher,
    Codec,
    Encoded,
    Rows,
    check_config_keys,
)
from llmc_format.codecs.video import bitstream, ffmpeg
from llmc_format.codecs.video import frames as framing
from llmc_format.codecs.video.frames import FrameGeometry
from llmc_format.errors import CodecError

#: bit depth of each pixel format we code in
PIX_DEPTH: dict[str, int] = {
    "gray": 8, "gray10le": 10, "gray12le": 12, "gray16le": 16, "yuv420p10le": 10,
}

#: frame defaults (see frames.py): ~1 M pixels per frame, sides up to 4096
DEFAULT_MAX_SIDE = 4096
DEFAULT_TARGET_PIXELS = 1 << 20

#: a frame hash as stored: XXH3-64 in ``%016x`` form (FORMAT.md §7.3)
_HASH_HEX = re.compile(r"[0-9a-f]{16}")

#: ``extract --raw``: how a luma sample becomes the stage's integer code, and the tiling
SAMPLE_FORMULA = (
    "q = min((s + half) >> shift, 2**bits - 1) with half = (1 << shift) >> 1, s = the decoded "
    "luma sample (little-endian uint16 in the pixel format's depth); shift = 0 means q = s."
)
MATRIX_RULE = (
    "A tensor of shape (s0, s1, ..., sk), k >= 1, is the C-order matrix (s0, s1*...*sk); "
    "a 1-D tensor (n,) is the matrix (1, n). Frame k covers matrix rows [r0, r1) and columns "
    "[c0, c1) (its 'box'); the coded frame is coded_height x coded_width, the box in its "
    "top-left corner, padded at the bottom and right by repeating the last row / column."
)

#: keys a codec writes into its config when it encodes (per-tensor state)
_STORED_KEYS = ("frames", "pix_fmt", "frame_hashes", "encoder_version", "ffmpeg_version")


@dataclass(frozen=True)
class StoredFrame:
    """One stored frame as a decoder sees it: the picture its blob must decode to."""

    index: int
    width: int
    height: int
    pix_fmt: str
    #: the coded bit depth, and whether the picture has 4:2:0 chroma planes
    depth: int
    chroma420: bool
    #: ``frame_hashes[index]``: xxh3-64 of the luma plane the writer decoded
    luma_hash: str


class VideoCodec(ArrayBytesCodec):
    """Shared machinery; subclasses say which encoder, pixel formats and arguments."""

    #: encoders this codec may use; the first is the default
    encoders: ClassVar[tuple[str, ...]]
    #: libavcodec decoder and container ("" = raw elementary stream) of the blobs
    decoder: ClassVar[str]
    container: ClassVar[str] = ""
    #: FFmpeg muxer writing the blob
    muxer: ClassVar[str]
    lossless: ClassVar[bool] = False
    takes_samples = True
    accepts_dct = True
    threaded = True
    #: frame sides must be multiples of ``align`` and at least ``min_size``
    align: ClassVar[int] = 8
    #: frames start on multiples of this when the limits allow (``frames.plan``)
    tile_align: ClassVar[int | None] = None
    min_size: ClassVar[int] = 16
    max_bits: ClassVar[int] = 10
    qp_range: ClassVar[tuple[int, int] | None] = (0, 63)
    default_qp: ClassVar[int] = 30

    def __init__(
        self,
        *,
        bits: int = 10,
        qp: int | None = None,
        preset: Any = None,
        encoder: str | None = None,
        max_width: int = DEFAULT_MAX_SIDE,
        max_height: int = DEFAULT_MAX_SIDE,
        target_pixels: int = DEFAULT_TARGET_PIXELS,
        threads: int = 0,
        frames: dict[str, int] | None = None,
        pix_fmt: str | None = None,
        frame_hashes: list[str] | None = None,
        encoder_version: str | None = None,
        ffmpeg_version: str | None = None,
    ) -> None:
        encoder = self.encoders[0] if encoder is None else encoder
        if encoder not in self.encoders:
            raise CodecError(f"codec {self.codec_id!r} encodes with one of {self.encoders}, "
                             f"not {encoder!r}")
        params: dict[str, Any] = {"bits": _int("bits", bits, 1, self._max_bits(encoder))}
        if self.qp_range is not None:
            low, high = self.qp_range
            params["qp"] = _int("qp", self.default_qp if qp is None else qp, low, high)
            params["preset"] = self._check_preset(encoder, self._default_preset(encoder)
                                                  if preset is None else preset)
        elif qp is not None or preset is not None:
            raise CodecError(f"codec {self.codec_id!r} is lossless: it takes no qp or preset")
        for key, side in (("max_width", max_width), ("max_height", max_height)):
            params[key] = _int(key, side, self.align, framing.MAX_SIDE)
            if side % self.align:
                raise CodecError(f"{key}={side} is not a multiple of {self.align}")
        params["target_pixels"] = _int("target_pixels", target_pixels, 1, 1 << 28)
        params["encoder"] = encoder
        stored = {"frames": frames, "pix_fmt": pix_fmt, "frame_hashes": frame_hashes,
                  "encoder_version": encoder_version, "ffmpeg_version": ffmpeg_version}
        for key in ("encoder_version", "ffmpeg_version"):
            if stored[key] is not None and not isinstance(stored[key], str):
                raise CodecError(f"{key} must be a string, got {stored[key]!r:.80}")
        params.update({k: v for k, v in stored.items() if v is not None})
        super().__init__(**params)
        self.threads = _int("threads", threads, 0, 1024)

    @classmethod
    def check_stored_config(cls, config: dict[str, Any], where: str = "") -> None:
        """Closed stored config (FORMAT.md §7.3): every key of the table but the
        provenance strings (and ``vvenc_params``, absent before it existed) is required."""
        required = {"bits", "encoder", "max_width", "max_height", "target_pixels", "frames",
                    "pix_fmt", "frame_hashes"}
        if not cls.lossless:
            required |= {"qp", "preset"}
        optional = {"encoder_version", "ffmpeg_version"} | (
            {"vvenc_params"} if cls.codec_id == "vvc" else set())
        check_config_keys(cls.codec_id, config, required, optional, where)
        for key in sorted(optional & config.keys()):  # present: a str (nil is not "absent")
            if not isinstance(config[key], str):
                raise CodecError(f"{where}: {key} must be a string, got {config[key]!r:.80}")
        if isinstance(config.get("preset"), str) and cls.codec_id == "av1":
            raise CodecError(f"{where}: stored av1 preset must be an int, not a string")

    # -- what subclasses provide -------------------------------------------------------

    def _max_bits(self, encoder: str) -> int:
        return self.max_bits

    def _default_preset(self, encoder: str) -> Any:
        raise NotImplementedError

    def _check_preset(self, encoder: str, preset: Any) -> Any:
        raise NotImplementedError

    def _pix_fmts(self, encoder: str) -> tuple[str, ...]:
        """Pixel formats ``encoder`` codes in, by increasing depth."""
        raise NotImplementedError

    def _codec_args(self) -> list[str]:
        """Arguments after ``-c:v <encoder>``."""
        raise NotImplementedError

    # -- encode --------------------------------------------------------------------------

    def encode(self, array: np.ndarray, spec: ArraySpec) -> Encoded:
        name = spec.name
        spec.check(array, what="input")
        rows, cols = framing.as_2d(spec.shape, name)
        matrix = array.reshape(rows, cols)
        bits: int = self.params["bits"]
        top = int(matrix.max())
        if top >= 1 << bits:
            raise CodecError(f"tensor {name!r}: value {top} does not fit in bits={bits}")
        encoder: str = self.params["encoder"]
        pix_fmt = self._pick_pix_fmt(encoder, bits)
        info = ffmpeg.encoder_info(encoder, pix_fmt)
        geom = framing.plan(
            rows, cols, max_width=self.params["max_width"], max_height=self.params["max_height"],
            target_pixels=self.params["target_pixels"], align=self.align, min_size=self.min_size,
            tile_align=self.tile_align,
        )
        blobs, hashes, seconds, decode_seconds = [], [], 0.0, 0.0
        recon = np.empty((rows, cols), dtype=np.uint16)  # what decode will return
        for k, frame in enumerate(framing.split(matrix, geom)):
            what = f"tensor {name!r} frame {k}"
            t0 = time.perf_counter()
            blobs.append(self._encode_frame(frame, pix_fmt, what))
            t1 = time.perf_counter()
            plane = self._decode_plane(blobs[-1], frame.shape, pix_fmt, what)
            hashes.append(luma_hash(plane))
            framing.place(recon, self._to_values(plane, pix_fmt, what), geom, k,
                          (0, rows, 0, cols))
            seconds += t1 - t0
            decode_seconds += time.perf_counter() - t1
        params = {k: v for k, v in self.params.items() if k not in _STORED_KEYS}
        config = {
            "id": self.codec_id, **params, "frames": geom.to_config(), "pix_fmt": pix_fmt,
            "frame_hashes": hashes, "encoder": info.name, "encoder_version": info.version,
            "ffmpeg_version": info.ffmpeg_version,
        }
        facts: dict[str, Any] = {"bytes": sum(map(len, blobs)), "encode_seconds": seconds,
                                 "decode_seconds": decode_seconds, "frames": len(blobs)}
        if not self.lossless:
            facts["qp"] = self.params["qp"]
        return Encoded(blobs=blobs, config=config, info=facts,
                       reconstruction=recon.reshape(spec.shape))

    def _pick_pix_fmt(self, encoder: str, bits: int) -> str:
        for pix_fmt in self._pix_fmts(encoder):
            if PIX_DEPTH[pix_fmt] >= bits:
                return pix_fmt
        raise CodecError(f"{encoder} cannot code {bits}-bit values")

    def _encode_frame(self, frame: np.ndarray, pix_fmt: str, what: str) -> bytes:
        depth = PIX_DEPTH[pix_fmt]
        shift = 0 if self.lossless else depth - self.params["bits"]
        samples = frame.astype("<u2") << shift if shift else frame.astype("<u2")
        raw = raw_frame(samples, pix_fmt, depth)
        height, width = frame.shape
        blob = ffmpeg.encode_frame(
            self.params["encoder"], pix_fmt, width, height, raw, self._codec_args(), self.muxer,
            threads=self.threads, what=what,
        )
        bitstream.check(self.codec_id, blob, what)
        return blob

    # -- decode --------------------------------------------------------------------------

    def _decode_plane(
        self, blob: bytes, shape: tuple[int, int], pix_fmt: str, what: str
    ) -> np.ndarray:
        """The decoded luma plane of one blob, which must be a ``shape`` frame."""
        from llmc_format.codecs.video import decode as video_decode  # imports av: load lazily

        height, width = shape
        fmt = video_decode.FrameFormat(self.decoder, self.container, width, height, pix_fmt)
        return video_decode.decode_frame(blob, fmt, what)

    def decode(
        self, fetch: BlobFetcher, n_blobs: int, spec: ArraySpec, rows: Rows | None = None
    ) -> np.ndarray:
        name = spec.name
        geom, pix_fmt, hashes = self._stored_layout(spec)
        if n_blobs != geom.n_frames:
            raise CodecError(f"tensor {name!r}: {n_blobs} blobs stored, the frame geometry "
                             f"needs {geom.n_frames}")
        _check_rows(rows, spec)
        box = framing.window_2d(spec.shape, rows)
        out = np.empty((box[1] - box[0], box[3] - box[2]), dtype=np.uint16)
        for k in geom.frames_for(*box):
            what = f"tensor {name!r} frame {k}"
            plane = self._decode_plane(fetch(k), geom.frame_shape(k), pix_fmt, what)
            if luma_hash(plane) != hashes[k]:
                raise CodecError(f"{what}: the decoded frame differs from the one decoded at "
                                 f"encode time (damaged blob, blob of another frame, or a "
                                 f"non-conformant decoder)")
            framing.place(out, self._to_values(plane, pix_fmt, what), geom, k, box)
        return spec.check(out.reshape(spec.rows_shape(rows)), rows)

    def stored_frames(self, spec: ArraySpec) -> list[StoredFrame]:
        """Every frame of a stored tensor (``spec``: this stage's input), config-checked."""
        geom, pix_fmt, hashes = self._stored_layout(spec)
        depth, chroma = PIX_DEPTH[pix_fmt], pix_fmt.startswith("yuv420p")
        return [StoredFrame(k, *geom.frame_shape(k)[::-1], pix_fmt, depth, chroma, hashes[k])
                for k in range(geom.n_frames)]

    def decode_luma(self, blob: bytes, frame: StoredFrame, what: str) -> np.ndarray:
        """The luma plane llmc's own decoder (PyAV) makes of one stored blob."""
        return self._decode_plane(blob, (frame.height, frame.width), frame.pix_fmt, what)

    def _stored_layout(self, spec: ArraySpec) -> tuple[FrameGeometry, str, list[str]]:
        name = spec.name
        if spec.dtype != "uint16":
            raise CodecError(f"tensor {name!r}: {self.codec_id} decodes to uint16, "
                             f"the spec says {spec.dtype}")
        missing = [k for k in ("frames", "pix_fmt", "frame_hashes") if k not in self.params]
        if missing:
            raise CodecError(f"tensor {name!r}: {self.codec_id} config lacks {missing} "
                             f"(it was not produced by encode)")
        rows, cols = framing.as_2d(spec.shape, name)
        geom = FrameGeometry.from_config(self.params["frames"], rows, cols, name)
        if (geom.align, geom.min_size) != (self.align, self.min_size):
            raise CodecError(f"tensor {name!r}: frame align/min_size {geom.align}/{geom.min_size} "
                             f"are not {self.codec_id}'s {self.align}/{self.min_size}")
        pix_fmt = self.params["pix_fmt"]
        if pix_fmt not in self._pix_fmts(self.params["encoder"]) or (
            PIX_DEPTH[pix_fmt] < self.params["bits"]
        ):
            raise CodecError(f"tensor {name!r}: pix_fmt {pix_fmt!r} is not one {self.codec_id} "
                             f"uses for {self.params['bits']}-bit values")
        hashes = self.params["frame_hashes"]
        if (not isinstance(hashes, list) or len(hashes) != geom.n_frames
                or not all(isinstance(h, str) and _HASH_HEX.fullmatch(h) for h in hashes)):
            raise CodecError(f"tensor {name!r}: frame_hashes must be {geom.n_frames} strings "
                             "of 16 lowercase hex digits")
        return geom, pix_fmt, hashes

    def _to_values(self, plane: np.ndarray, pix_fmt: str, what: str) -> np.ndarray:
        bits: int = self.params["bits"]
        if self.lossless:
            if plane.size and int(plane.max()) >= 1 << bits:
                raise CodecError(f"{what}: decoded value {int(plane.max())} exceeds bits={bits}")
            return plane
        shift = PIX_DEPTH[pix_fmt] - bits
        if shift:
            plane = (plane + ((1 << shift) >> 1)) >> shift
        return np.minimum(plane, (1 << bits) - 1).astype(np.uint16)

    # -- extract --raw ---------------------------------------------------------------------

    def raw_record(self, spec: ArraySpec, files: list[str], sizes: list[int]) -> dict[str, Any]:
        """The sidecar of ``extract --raw``: each blob is a complete FFmpeg-readable stream;
        the record says how to read it (``ffmpeg -f <muxer>``), where each frame sits in the
        matrix and how luma samples become the stage's integer codes."""
        rows, cols = framing.as_2d(spec.shape, spec.name)
        geom, pix_fmt, hashes = self._stored_layout(spec)
        if len(files) != geom.n_frames:
            raise CodecError(f"tensor {spec.name!r}: {len(files)} blobs for {geom.n_frames} frames")
        frames = []
        for k, (file, size) in enumerate(zip(files, sizes, strict=True)):
            r0, r1, c0, c1 = geom.box(k)
            height, width = geom.frame_shape(k)
            frames.append({"index": k, "file": file, "bytes": size, "rows": [r0, r1],
                           "cols": [c0, c1], "coded_height": height, "coded_width": width,
                           "xxh3_64_of_luma": hashes[k]})
        bits = self.params["bits"]
        return {
            "matrix": {"rows": rows, "cols": cols, "rule": MATRIX_RULE},
            "codec": {k: v for k, v in self.get_config().items() if k != "frame_hashes"},
            "ffmpeg_decode": (f"ffmpeg -f {self.muxer} -i FILE -f rawvideo -pix_fmt {pix_fmt} -"
                              "  # luma plane = the first coded_height*coded_width samples"),
            "samples": {"pix_fmt": pix_fmt, "bits": bits,
                        "shift": 0 if self.lossless else PIX_DEPTH[pix_fmt] - bits,
                        "formula": SAMPLE_FORMULA},
            "frames": frames,
            "frame_hash": "xxh3_64_of_luma: XXH3-64 (hex) of the decoded coded_height x "
                          "coded_width luma plane as little-endian uint16 bytes (llmc checks "
                          "it at every decode)",
            "reference": "spec/FORMAT.md §7.3 (video codecs), llmc_format/codecs/video/frames.py "
                         "(tiling rule)",
        }


class VvcCodec(VideoCodec):
    """H.266/VVC with libvvenc: all-intra (``-g 1``), no perceptual QP adaptation.

    ``vvenc_params`` is passed as FFmpeg's ``-vvenc-params`` (``Key=Value`` pairs joined by
    ``:``, libvvenc's configuration names) and stored in the config. The default, measured
    on SmolLM2's and MiniLM's weights (docs/results/tuning.md, speed.md):

    - ``DepQuant=1:SignHideFlag=0``: dependent quantization (it excludes sign hiding),
      which ``faster`` leaves off: +0.4 to +0.6 dB at equal bits per weight.
    - ``CTUSize=32:MinQTISlice=32``: every intra coding unit is one 32x32 block. Smaller
      blocks cost search time and buy nothing on noise-like weights: 0.57x the encoder
      CPU of the previous default (``MinQTISlice=16``, CTU 64) for −0.06 to −0.09 dB at
      2–4 bits per weight (SmolLM2 layers 0/7/15/29), and the bitstreams decode faster.
    - ``MTSImplicit=0:TransformSkip=0:BDPCM=0``: no transform other than DCT-II (the
      encoder never chose another on weights; TransformSkip=0 needs BDPCM=0).
    - ``LoopFilterDisable=1:SAO=0:ALF=0:CCALF=0``: no in-loop filters (on weights they
      leave the decoded picture as it is; signalled off, the decoder skips them).
    - ``IntraEstDecBit=4``: a cheaper intra mode estimate (−3% CPU, ±0.005 dB).
    - ``EDO=0``: no encoder decision optimisation, which evaluates the in-loop filters
      the line above turns off; presets ``medium`` and slower enable it and libvvenc then
      refuses the configuration ("no EDO support with LoopFilter disabled"). ``faster``
      and ``fast`` have it off already: their bitstreams are byte-identical with or
      without the key.

    The other keys tried (presets, RDOQ, LFNST, MTS, MTT depth, chroma tools, lambda)
    change < 0.1 dB or cost 2x the CPU. A stored config from before this option (it has
    ``frame_hashes`` but no ``vvenc_params``) reads as ``""``: no extra parameters.
    """

    codec_id = "vvc"
    encoders = ("libvvenc",)
    #: the default's coding blocks are 32x32 (CTUSize=32): frames start on that grid
    tile_align = 32
    decoder = "vvc"
    muxer = "vvc"
    raw_extension = ".266"
    sample_qps = (22, 29, 36, 43)
    log_step = True
    prefers_dct = True
    presets: ClassVar[tuple[str, ...]] = ("faster", "fast", "medium", "slow", "slower")
    #: ``-vvenc-params`` when a config names none (see the class docstring)
    default_vvenc_params: ClassVar[str] = (
        "DepQuant=1:SignHideFlag=0:CTUSize=32:MinQTISlice=32:MTSImplicit=0:TransformSkip=0:"
        "BDPCM=0:LoopFilterDisable=1:SAO=0:ALF=0:CCALF=0:IntraEstDecBit=4:EDO=0")

    def __init__(self, *, vvenc_params: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        chosen = self.default_vvenc_params if vvenc_params is None else vvenc_params
        self.params["vvenc_params"] = _vvenc_params(chosen)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Codec:
        if "frame_hashes" in config and "vvenc_params" not in config:
            config = {**config, "vvenc_params": ""}  # encoded before the option existed
        return super().from_config(config)

    def _default_preset(self, encoder: str) -> str:
        return "faster"

    def _check_preset(self, encoder: str, preset: Any) -> str:
        return _choice("preset", preset, self.presets)

    def _pix_fmts(self, encoder: str) -> tuple[str, ...]:
        return ("yuv420p10le",)

    def _codec_args(self) -> list[str]:
        args = ["-preset", self.params["preset"], "-qp", str(self.params["qp"]),
                "-qpa", "0", "-g", "1"]
        if self.params["vvenc_params"]:
            args += ["-vvenc-params", self.params["vvenc_params"]]
        return args


#: libvvenc keys llmc sets itself (or whose change would break the frame contract)
_VVENC_MANAGED = frozenset(
    k.lower() for k in (
        "QP", "q", "preset", "qpa", "PerceptQPA", "IntraPeriod", "ip", "RefreshSec", "rs",
        "GOPSize", "g", "DecodingRefreshType", "dr", "refreshtype", "rt", "InternalBitDepth",
        "internal-bitdepth", "InputBitDepth", "InputBitDepthC", "OutputBitDepth",
        "OutputBitDepthC", "MSBExtendedBitDepth", "MSBExtendedBitDepthC", "ChromaFormatIDC",
        "cf", "InputChromaFormat", "SourceWidth", "SourceHeight", "size", "s", "framerate",
        "r", "frames", "f", "bitrate", "TargetBitrate", "Passes", "NumPasses", "Pass",
        "threads", "t", "Threads", "MaxParallelFrames", "CostMode", "verbosity", "v",
    )
)
_VVENC_KEY = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")
_VVENC_VALUE = re.compile(r"[A-Za-z0-9_.,+-]{1,64}")


def _vvenc_params(value: Any) -> str:
    """Validate ``-vvenc-params``: ``Key=Value`` pairs joined by ``:`` (or ``""``)."""
    if not isinstance(value, str) or len(value) > 1024:
        raise CodecError(f"vvenc_params must be a string of Key=Value pairs joined by ':', "
                         f"got {value!r:.80}")
    if not value:
        return value
    for item in value.split(":"):
        key, eq, val = item.partition("=")
        if not (eq and _VVENC_KEY.fullmatch(key) and _VVENC_VALUE.fullmatch(val)):
            raise CodecError(f"vvenc_params item {item!r:.80} is not Key=Value (letters, digits, "
                             f"'_', '-', '.', ',', '+')")
        if key.lower() in _VVENC_MANAGED:
            raise CodecError(f"vvenc_params may not set {key!r}: llmc sets it (use the codec's "
                             f"own options) or it would change the frame format")
    return value


class HevcCodec(VideoCodec):
    """H.265/HEVC with libx265, monochrome, every frame IDR at exactly ``qp``.

    x265 in constant-QP mode codes I frames at ``qp - 3`` unless ``ipratio=1``; psy-rd,
    psy-rdoq and adaptive quantization are off because the pipeline scores MSE, not looks.
    """

    codec_id = "hevc"
    encoders = ("libx265",)
    #: frames start on the 32x32 grid of x265's largest transform (and of ``blockdct``)
    tile_align = 32
    decoder = "hevc"
    muxer = "hevc"
    raw_extension = ".265"
    sample_qps = (18, 25, 32, 39)
    log_step = True
    prefers_dct = True
    max_bits = 12
    qp_range = (0, 51)
    presets: ClassVar[tuple[str, ...]] = (
        "ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower",
        "veryslow", "placebo",
    )

    def _default_preset(self, encoder: str) -> str:
        return "medium"

    def _check_preset(self, encoder: str, preset: Any) -> str:
        return _choice("preset", preset, self.presets)

    def _pix_fmts(self, encoder: str) -> tuple[str, ...]:
        return ("gray10le", "gray12le")

    def _codec_args(self) -> list[str]:
        x265 = (f"qp={self.params['qp']}:keyint=1:ipratio=1:aq-mode=0:psy-rd=0:psy-rdoq=0"
                ":info=0:log-level=error")
        return ["-preset", self.params["preset"], "-x265-params", x265]


class Av1Codec(VideoCodec):
    """AV1, intra only, at a constant quantizer; decoded by libdav1d.

    ``encoder`` is ``libsvtav1`` (default; 4:2:0 10-bit only, so ``bits`` <= 10;
    ``preset`` 0..13) or ``libaom-av1`` (monochrome, up to 12 bits; ``preset`` is its
    ``cpu-used``, 0..8, in ``allintra`` usage). ``qp`` is SVT's ``qp`` / libaom's ``crf``
    (with ``b:v 0`` and no adaptive quantization: a constant quantizer), 1..63.

    Measured on MiniLM-L6 weights (3.5 M, 10-bit per-row): SVT preset 8 used ~4x less
    CPU than libaom cpu-used 6 and ~7x less than libvvenc ``faster``, for the same SNR as
    libaom at >= 3.5 bpw and 0.2 dB less at 2.5 bpw; both AV1 encoders were 0.1-0.5 dB
    above libvvenc ``faster`` at equal rate.
    """

    codec_id = "av1"
    encoders = ("libsvtav1", "libaom-av1")
    decoder = "libdav1d"
    muxer = "obu"
    raw_extension = ".obu"
    sample_qps = (16, 28, 40, 52)
    qp_range = (1, 63)
    default_qp = 32

    def _max_bits(self, encoder: str) -> int:
        return 10 if encoder == "libsvtav1" else 12

    def _default_preset(self, encoder: str) -> int:
        return 8 if encoder == "libsvtav1" else 6

    def _check_preset(self, encoder: str, preset: Any) -> int:
        if isinstance(preset, str) and preset.isdigit():  # as a command line passes it
            preset = int(preset)
        return _int("preset", preset, 0, 13 if encoder == "libsvtav1" else 8)

    def _pix_fmts(self, encoder: str) -> tuple[str, ...]:
        return ("yuv420p10le",) if encoder == "libsvtav1" else ("gray10le", "gray12le")

    def _codec_args(self) -> list[str]:
        qp, preset = str(self.params["qp"]), str(self.params["preset"])
        if self.params["encoder"] == "libsvtav1":
            return ["-preset", preset, "-qp", qp, "-svtav1-params", "rc=0:aq-mode=0:keyint=1"]
        return ["-usage", "allintra", "-cpu-used", preset, "-crf", qp, "-b:v", "0",
                "-aq-mode", "0", "-aom-params", "deltaq-mode=0"]


class Ffv1Codec(VideoCodec):
    """FFV1 version 3 (lossless, slice CRCs) in a NUT container.

    Bit-exact, but on weights it is no entropy coder: its spatial prediction doubles the
    variance of noise-like data, so 10-bit weights cost ~10.1 bits each (measured on
    MiniLM-L6), more than their order-0 entropy (~9.5). It is here as a lossless video
    reference, not as a good choice.
    """

    codec_id = "ffv1"
    encoders = ("ffv1",)
    decoder = "ffv1"
    container = "nut"
    muxer = "nut"
    raw_extension = ".nut"
    lossless = True
    qp_range = None
    accepts_dct = False
    align = 1
    min_size = 2  # FFmpeg's FFV1 v3 encoder refuses 1-pixel-wide frames taller than 1
    max_bits = 16

    def _pix_fmts(self, encoder: str) -> tuple[str, ...]:
        return ("gray", "gray10le", "gray12le", "gray16le")

    def _codec_args(self) -> list[str]:
        return ["-level", "3", "-g", "1", "-slicecrc", "1"]


def luma_hash(plane: np.ndarray) -> str:
    """xxh3-64 (hex) of a decoded luma plane as little-endian uint16 (``frame_hashes``)."""
    return xxhash.xxh3_64_hexdigest(np.ascontiguousarray(plane, dtype="<u2").tobytes())


def raw_frame(samples: np.ndarray, pix_fmt: str, depth: int) -> bytes:
    """The rawvideo bytes of one frame: luma = ``samples``; chroma (4:2:0) mid-grey."""
    if pix_fmt == "gray":
        return samples.astype(np.uint8).tobytes()
    luma = samples.astype("<u2").tobytes()
    if not pix_fmt.startswith("yuv420p"):
        return luma
    height, width = samples.shape
    chroma = np.full(2 * (height // 2) * (width // 2), 1 << (depth - 1), dtype="<u2")
    return luma + chroma.tobytes()


def _check_rows(rows: Rows | None, spec: ArraySpec) -> None:
    if rows is None:
        return
    n = spec.shape[0] if spec.shape else 0
    if (not isinstance(rows, Sequence) or len(rows) != 2
            or any(type(r) is not int for r in rows) or not 0 <= rows[0] <= rows[1] <= n):
        raise CodecError(f"tensor {spec.name!r}: bad row range {rows!r} for {n} rows")


def _int(key: str, value: Any, low: int, high: int) -> int:
    if type(value) is not int or not low <= value <= high:
        raise CodecError(f"{key} must be an integer in [{low}, {high}], got {value!r:.80}")
    return value


def _choice(key: str, value: Any, allowed: Sequence[str]) -> str:
    if value not in allowed or not isinstance(value, str):
        raise CodecError(f"{key} must be one of {list(allowed)}, got {value!r:.80}")
    return value
