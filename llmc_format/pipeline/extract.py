"""Take one tensor out of an archive: decoded (``.npy``), or as its bare video bitstreams.

Why ``raw``: an archive must stay readable without llmc. A lossy tensor is a standard
video bitstream per frame plus a few numbers (per-row scale and offset, the sample shift,
where each frame sits in the matrix), so ``extract_raw`` writes exactly that: the blobs as
stored (``.266`` VVC, ``.265`` HEVC, ``.obu`` AV1, ``.nut`` FFV1 — each a complete,
self-contained stream FFmpeg reads) and a JSON sidecar with everything else. With FFmpeg
and numpy one rebuilds the tensor bit for bit (``tests/pipeline/test_extract.py`` does)::

    ffmpeg -f vvc -i x.266 -f rawvideo -pix_fmt yuv420p10le -     # luma = first H*W*2 bytes
    s = luma (H x W uint16 LE); q = min((s + half) >> shift, 2**bits - 1)   (sidecar "samples")
    tensor[rows, cols] of frame k = q[:r1 - r0, :c1 - c0]                   (sidecar "frames")
    x = dtype(clamp(fl32(fl32(float32(q) * scale) + offset)))             (sidecar "dequantization")

The normative definitions are ``spec/FORMAT.md`` §7.2 (affine) and §7.3 (video codecs);
the sidecar restates them so it stands alone.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from llmc_format import dtypes
from llmc_format.codecs.base import ArraySpec
from llmc_format.container.index import TensorEntry
from llmc_format.container.reader import Reader
from llmc_format.decode import read_tensor
from llmc_format.errors import CodecError, LlmcError
from llmc_format.outfiles import atomic_output

#: file extension of each video codec's blobs (what the blob is, as FFmpeg names it)
BITSTREAM_EXT: dict[str, str] = {"vvc": ".266", "hevc": ".265", "av1": ".obu", "ffv1": ".nut"}
#: FFmpeg demuxer (``-f``) reading each codec's blob
FFMPEG_DEMUXER: dict[str, str] = {"vvc": "vvc", "hevc": "hevc", "av1": "obu", "ffv1": "nut"}
#: suffixes stripped from ``-o`` before the right extension is added
_KNOWN_SUFFIXES = {*BITSTREAM_EXT.values(), ".ivf", ".bin", ".json", ".npy"}

SIDECAR_FORMAT = "llmc-extract/1"

DEQUANT_FORMULA = (
    "For the element at matrix position (r, c) with code q, take its cell's stored params "
    "s = scale[r'][g], o = offset[r'][g] (r' = r, or 0 for granularity 'tensor'; g = c // group_size "
    "for 'group', else 0). S = float32(s), O = float32(o); t = fl32(float32(q) * S); "
    "u = fl32(t + O) (two IEEE binary32 round-to-nearest-even operations, no fused multiply-add); "
    "v = min(max(u, -M), M) with M = the largest finite value of the tensor dtype "
    "(float32 max for float32/float64); x = v rounded to the tensor dtype (nearest-even)."
)
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


@dataclass(frozen=True)
class RawExtract:
    """What ``extract_raw`` wrote."""

    bitstreams: list[Path]
    sidecar: Path
    info: dict[str, Any]


def _codec_stages(entry: TensorEntry) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """(affine config or None, video config) of a video-coded tensor; LlmcError otherwise."""
    pipeline = list(entry.pipeline)
    ids = [c.get("id") for c in pipeline]
    video = pipeline[-1] if pipeline else {}
    if video.get("id") not in BITSTREAM_EXT or len(pipeline) > 2 or (
        len(pipeline) == 2 and ids[0] != "affine"
    ):
        raise LlmcError(
            f"tensor {entry.name!r} is stored with pipeline {ids}; --raw extracts tensors coded "
            f"by a video codec ({', '.join(BITSTREAM_EXT)}), optionally after 'affine' — "
            f"extract it without --raw to get the decoded tensor"
        )
    # the configs are the file's: validated by the codecs themselves before any number in
    # them is used (a bits of "x" or an unknown pix_fmt crashed --raw before)
    from llmc_format.codecs.registry import get_codec

    where = f"tensor {entry.name!r}"
    affine = get_codec(pipeline[0], where).get_config() if len(pipeline) == 2 else None
    codec = get_codec(video, where)
    codec._stored_layout(ArraySpec("uint16", entry.shape, entry.name))  # type: ignore[attr-defined]
    return affine, codec.get_config()


def bitstream_paths(out: str | os.PathLike[str], codec: str, n_frames: int) -> tuple[list[Path], Path]:
    """Where the frames and the sidecar go: ``x.266`` or ``x.000.266``, ``x.001.266``...; ``x.json``.

    A known bitstream suffix on ``out`` (``.266``, ``.obu``...) is replaced by the codec's,
    so ``-o x.266`` and ``-o x`` both work.
    """
    out = Path(out)
    stem = out.with_suffix("") if out.suffix in _KNOWN_SUFFIXES else out
    ext = BITSTREAM_EXT[codec]
    if n_frames == 1:
        frames = [stem.with_name(stem.name + ext)]
    else:
        width = max(3, len(str(n_frames - 1)))
        frames = [stem.with_name(f"{stem.name}.{k:0{width}d}{ext}") for k in range(n_frames)]
    return frames, stem.with_name(stem.name + ".json")


def _frame_records(video: dict[str, Any], spec: ArraySpec, paths: list[Path],
                   sizes: list[int]) -> list[dict[str, Any]]:
    from llmc_format.codecs.video.frames import FrameGeometry, as_2d

    rows, cols = as_2d(spec.shape, spec.name)
    geom = FrameGeometry.from_config(video["frames"], rows, cols, spec.name)
    records = []
    for k, (path, size) in enumerate(zip(paths, sizes, strict=True)):
        r0, r1, c0, c1 = geom.box(k)
        height, width = geom.frame_shape(k)
        records.append({
            "index": k, "file": path.name, "bytes": size, "rows": [r0, r1], "cols": [c0, c1],
            "coded_height": height, "coded_width": width,
            "xxh3_64_of_luma": video["frame_hashes"][k],
        })
    return records


def _dequant_record(affine: dict[str, Any], spec: ArraySpec, reader: Reader,
                    entry: TensorEntry) -> dict[str, Any]:
    from llmc_format.quant.affine import AffineParams
    from llmc_format.quant.grid import Grid

    grid = Grid.of(spec.shape, affine["granularity"], affine["group_size"])
    refs = entry.stage_blobs(0)
    if len(refs) != 1:
        raise CodecError(f"tensor {spec.name!r}: affine stage has {len(refs)} blobs, expected 1")
    blob = reader.read_blob(refs[0], f"tensor {spec.name!r} affine params")
    params = AffineParams.from_bytes(blob, grid, affine["param_dtype"], spec.name)
    return {
        "stage": "affine",
        "bits": affine["bits"],
        "granularity": affine["granularity"],
        "group_size": affine["group_size"],
        "param_dtype": affine["param_dtype"],
        "param_shape": [grid.param_rows, grid.groups],
        # float16/bfloat16/float32 values widen exactly to float64, which JSON keeps exactly
        "scale": params.scale.astype(np.float64).tolist(),
        "offset": params.offset.astype(np.float64).tolist(),
        "formula": DEQUANT_FORMULA,
        "reference": "spec/FORMAT.md §7.2 (affine); llmc_format/quant/affine.py docstring",
    }


def _refuse_existing(paths: list[Path], overwrite: bool) -> None:
    existing = [str(p) for p in paths if p.exists()]
    if existing and not overwrite:
        raise LlmcError(f"{', '.join(existing[:3])}{' ...' if len(existing) > 3 else ''} "
                        f"already exist{'s' if len(existing) == 1 else ''}; pass --force to overwrite")


def extract_raw(archive: str | os.PathLike[str], name: str,
                out: str | os.PathLike[str] | None = None, *, overwrite: bool = False) -> RawExtract:
    """Write tensor ``name``'s bitstreams (one file per frame) and a JSON sidecar next to ``out``.

    ``out`` defaults to a name derived from the tensor's, in the current directory.
    """
    from llmc_format.codecs.video.codecs import PIX_DEPTH
    from llmc_format.codecs.video.frames import as_2d

    out = default_output(name) if out is None else out

    with Reader(archive) as reader:
        entry = reader.resolve(name)
        spec = ArraySpec(entry.dtype, entry.shape, name)
        affine, video = _codec_stages(entry)
        stage = len(entry.pipeline) - 1
        refs = entry.stage_blobs(stage)
        codec = video["id"]
        if len(refs) != len(video["frame_hashes"]):
            raise CodecError(f"tensor {name!r}: {len(refs)} frame blobs stored, the config "
                             f"describes {len(video['frame_hashes'])}")
        paths, sidecar = bitstream_paths(out, codec, len(refs))
        _refuse_existing([*paths, sidecar], overwrite)
        blobs = [reader.read_blob(ref, f"tensor {name!r} frame {k}") for k, ref in enumerate(refs)]
        frames = _frame_records(video, ArraySpec("uint16", spec.shape, name), paths,
                                [len(b) for b in blobs])
        dequant = _dequant_record(affine, spec, reader, entry) if affine else None
    rows, cols = as_2d(spec.shape, name)
    bits = video["bits"]
    pix_fmt = video["pix_fmt"]
    lossless = codec == "ffv1"
    shift = 0 if lossless else PIX_DEPTH[pix_fmt] - bits
    info: dict[str, Any] = {
        "format": SIDECAR_FORMAT,
        "archive": Path(archive).name,
        "tensor": name,
        "dtype": spec.dtype,
        "shape": list(spec.shape),
        "matrix": {"rows": rows, "cols": cols, "rule": MATRIX_RULE},
        "codec": {k: v for k, v in video.items() if k != "frame_hashes"},
        "ffmpeg_decode": (f"ffmpeg -f {FFMPEG_DEMUXER[codec]} -i FILE -f rawvideo "
                          f"-pix_fmt {pix_fmt} -  # luma plane = the first "
                          f"coded_height*coded_width samples"),
        "samples": {"pix_fmt": pix_fmt, "bits": bits, "shift": shift, "formula": SAMPLE_FORMULA},
        "frames": frames,
        "frame_hash": "xxh3_64_of_luma: XXH3-64 (hex) of the decoded coded_height x coded_width "
                      "luma plane as little-endian uint16 bytes (llmc checks it at every decode)",
        "dequantization": dequant,
        "reference": "spec/FORMAT.md §7.3 (video codecs), llmc_format/codecs/video/frames.py "
                     "(tiling rule)",
    }
    for path, blob in zip(paths, blobs, strict=True):
        with atomic_output(path) as f:  # never through a symlink, never half-written
            f.write(blob)
    with atomic_output(sidecar) as f:
        f.write((json.dumps(info, indent=1) + "\n").encode("utf-8"))
    return RawExtract(paths, sidecar, info)


#: dtypes ``.npy`` cannot describe without ml_dtypes: written widened to float32 (exact)
_WIDENED = frozenset({"bfloat16", "float8_e4m3fn", "float8_e5m2"})


def extract_array(archive: str | os.PathLike[str], name: str,
                  out: str | os.PathLike[str] | None = None, *, overwrite: bool = False) -> Path:
    """Decode tensor ``name`` and save it as ``.npy`` (bfloat16/float8 widened to float32).

    Plain numpy cannot load ml_dtypes' bfloat16 from a ``.npy``; float32 holds every
    bfloat16 and float8 value exactly, so widening loses nothing.
    """
    out = default_output(name) if out is None else Path(out)
    if out.suffix != ".npy":
        out = out.with_name(out.name + ".npy")
    _refuse_existing([out], overwrite)
    with Reader(archive) as reader:
        entry = reader.resolve(name)
        array = read_tensor(reader, name)
    if entry.dtype in _WIDENED:
        array = array.astype(np.float32)
    elif array.dtype != dtypes.to_numpy(entry.dtype):  # pragma: no cover - read_tensor checks
        raise LlmcError(f"tensor {name!r}: decoded dtype {array.dtype} is not {entry.dtype}")
    with atomic_output(out) as f:
        np.save(f, np.ascontiguousarray(array), allow_pickle=False)
    return out


def default_output(name: str) -> Path:
    """A file stem in the current directory derived from the tensor name."""
    return Path(re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "tensor")
