"""Take one tensor out of an archive: decoded (``.npy``), or as its bare video bitstreams.

Why ``raw``: an archive must stay readable without llmc. A lossy tensor is a standard
video bitstream per frame plus a few numbers (per-row scale and offset, the sample shift,
where each frame sits in the matrix), so ``extract_raw`` writes exactly that: the blobs as
stored (``.266`` VVC, ``.265`` HEVC, ``.obu`` AV1, ``.nut`` FFV1 — each a complete,
self-contained stream FFmpeg reads: the codec's ``raw_extension``) and a JSON sidecar with
everything else, as each stage describes itself (``raw_record``; for ``blockdct`` the
integers are block inverse-DCT codes, and the sidecar carries its matrix and steps). With FFmpeg
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
from llmc_format.codecs.base import ArrayArrayCodec, ArrayBytesCodec, ArraySpec
from llmc_format.codecs.registry import codec_classes, get_codec
from llmc_format.container.index import TensorEntry
from llmc_format.container.reader import Reader
from llmc_format.decode import read_tensor
from llmc_format.errors import LlmcError
from llmc_format.outfiles import atomic_output

#: suffixes stripped from ``-o`` (besides the codecs' own) before the right extension is added
_GENERIC_SUFFIXES = {".ivf", ".bin", ".json", ".npy"}

SIDECAR_FORMAT = "llmc-extract/1"


@dataclass(frozen=True)
class RawExtract:
    """What ``extract_raw`` wrote."""

    bitstreams: list[Path]
    sidecar: Path
    info: dict[str, Any]


def _raw_stages(entry: TensorEntry) -> tuple[list[ArrayArrayCodec], ArrayBytesCodec]:
    """(array stages, final stage) of a tensor ``--raw`` can write; LlmcError otherwise.

    Asks the codecs: the final stage must have a raw form (``raw_extension``) and every
    stage in front of it (the quantization stage, and any stage before that, such as
    ``diagscale``) must describe itself (``raw_record``) — a codec registered by entry
    point qualifies exactly as a built-in one does.
    """
    where = f"tensor {entry.name!r}"
    stages = [get_codec(c, where) for c in entry.pipeline]
    ids = [s.codec_id for s in stages]
    final, front = stages[-1], stages[:-1]
    if not (isinstance(final, ArrayBytesCodec) and final.raw_extension is not None and front
            and all(isinstance(s, ArrayArrayCodec)
                    and type(s).raw_record is not ArrayArrayCodec.raw_record for s in front)):
        raw = ", ".join(f"{i} ({c.raw_extension})" for i, c in _raw_codecs().items())
        raise LlmcError(
            f"tensor {entry.name!r} is stored with pipeline {ids}; --raw extracts tensors coded "
            f"by a codec with a raw bitstream ({raw}) after a quantization stage — extract it "
            f"without --raw to get the decoded tensor"
        )
    return front, final  # type: ignore[return-value]


def _raw_codecs() -> dict[str, type[ArrayBytesCodec]]:
    """Every registered final stage whose blobs have a raw form, by id."""
    return {i: c for i, c in codec_classes().items()
            if issubclass(c, ArrayBytesCodec) and c.raw_extension is not None}


def bitstream_paths(out: str | os.PathLike[str], codec: str, n_frames: int) -> tuple[list[Path], Path]:
    """Where the frames and the sidecar go: ``x.266`` or ``x.000.266``, ``x.001.266``...; ``x.json``.

    A known bitstream suffix on ``out`` (``.266``, ``.obu``...) is replaced by the codec's,
    so ``-o x.266`` and ``-o x`` both work.
    """
    out = Path(out)
    raw = _raw_codecs()
    if codec not in raw:
        raise LlmcError(f"codec {codec!r} has no raw bitstream form")
    known = _GENERIC_SUFFIXES | {c.raw_extension for c in raw.values()}
    stem = out.with_suffix("") if out.suffix in known else out
    ext = raw[codec].raw_extension
    assert ext is not None
    if n_frames == 1:
        frames = [stem.with_name(stem.name + ext)]
    else:
        width = max(3, len(str(n_frames - 1)))
        frames = [stem.with_name(f"{stem.name}.{k:0{width}d}{ext}") for k in range(n_frames)]
    return frames, stem.with_name(stem.name + ".json")


def _refuse_existing(paths: list[Path], overwrite: bool) -> None:
    existing = [str(p) for p in paths if p.exists()]
    if existing and not overwrite:
        raise LlmcError(f"{', '.join(existing[:3])}{' ...' if len(existing) > 3 else ''} "
                        f"already exist{'s' if len(existing) == 1 else ''}; pass --force to overwrite")


def extract_raw(archive: str | os.PathLike[str], name: str,
                out: str | os.PathLike[str] | None = None, *, overwrite: bool = False) -> RawExtract:
    """Write tensor ``name``'s bitstreams (one file per blob) and a JSON sidecar next to ``out``.

    The sidecar joins what each stage says of itself: the final stage how to read its blobs
    (for a video codec: the FFmpeg demuxer, where each frame sits, the sample shift), the
    quantization stage what its integers are (``dequantization``: affine's per-cell scale
    and offset, or blockdct's inverse-DCT codes with its matrix). ``out`` defaults to a name
    derived from the tensor's, in the current directory.
    """
    out = output_path(out, name)

    with Reader(archive) as reader:
        entry = reader.resolve(name)
        spec = ArraySpec(entry.dtype, entry.shape, name)
        front, final = _raw_stages(entry)
        n = len(front)  # the final stage's index
        refs = entry.stage_blobs(n)
        paths, sidecar = bitstream_paths(out, final.codec_id, len(refs))
        _refuse_existing([*paths, sidecar], overwrite)
        blobs = [reader.read_blob(ref, f"tensor {name!r} blob {k}") for k, ref in enumerate(refs)]
        specs = [spec]
        for stage in front:
            specs.append(stage.resolve(specs[-1]))
        records = []
        for k, stage in enumerate(front):
            stage_refs = entry.stage_blobs(k)

            def fetch(i: int, k: int = k, stage_refs: list[Any] = stage_refs) -> bytes:
                if not 0 <= i < len(stage_refs):
                    raise LlmcError(f"tensor {name!r}: stage {k} asked for blob {i} of "
                                    f"{len(stage_refs)}")
                return reader.read_blob(stage_refs[i], f"tensor {name!r} {front[k].codec_id} "
                                        f"blob {i}")

            record = stage.raw_record(specs[k], fetch, len(stage_refs))
            assert record is not None  # _raw_stages checked
            records.append({**record, "output_dtype": specs[k].dtype})
        final_record = final.raw_record(specs[n], [p.name for p in paths], [len(b) for b in blobs])
    info: dict[str, Any] = {
        "format": SIDECAR_FORMAT,
        "archive": Path(archive).name,
        "tensor": name,
        "dtype": spec.dtype,
        "shape": list(spec.shape),
        **final_record,
        "codec": {"id": final.codec_id, **final_record.get("codec", {})},
        # the stage in front of the video codec: what its integers are
        "dequantization": records[-1],
    }
    if len(records) > 1:  # stages applied to the dequantized values, in this order
        info["after_dequantization"] = records[-2::-1]
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
    out = output_path(out, name)
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


def output_path(out: str | os.PathLike[str] | None, name: str) -> Path:
    """Where ``-o`` says to write tensor ``name``: the default name in the current directory,
    in ``out`` when it is a directory (existing, or written with a trailing ``/``), else
    ``out`` itself. A directory that does not exist is refused (nothing to create it in)."""
    if out is None:
        return default_output(name)
    given = os.fspath(out)
    if given.endswith(("/", os.sep)) or Path(given).is_dir():
        if not Path(given).is_dir():
            raise LlmcError(f"-o {given}: no such directory")
        return Path(given) / default_output(name)
    path = Path(given)
    if not path.parent.is_dir():
        raise LlmcError(f"-o {given}: no such directory {str(path.parent)!r}")
    return path


def default_output(name: str) -> Path:
    """A file stem in the current directory derived from the tensor name."""
    return Path(re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "tensor")
