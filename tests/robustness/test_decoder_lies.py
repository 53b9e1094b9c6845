"""Decoder bombs and lies: the index says one thing, the bitstream another.

Every file here passes the container layer (valid tiling, valid checksums: the lie is
written as a real writer would), so it is the codec layer that must notice — a wrong
frame size or count, a bitstream of another resolution or codec, frames swapped, a zstd
frame or attachment declaring a huge size, a shape the blobs cannot hold. Each must end
in a typed ``LlmcError`` (most often ``CodecError``), without allocating what the lie
declares, and ``verify`` must report the file as damaged.
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zstandard

import llmc_format
from fuzz.harness import ArchiveModel
from llmc_format.errors import CodecError, LimitError, LlmcError

#: what a lie may make the reader allocate (Python/numpy allocations, tracemalloc)
MEMORY_LIMIT = 64 << 20

Lie = Callable[[ArchiveModel, dict[str, bytes]], None]


def tensor(m: ArchiveModel, name: str) -> dict[str, Any]:
    return next(t for t in m.tensor_dicts() if t["name"] == name)


def stage_blobs(m: ArchiveModel, name: str, stage: int) -> list[dict[str, Any]]:
    return [b for b in tensor(m, name)["blobs"] if b["stage"] == stage]


def video(m: ArchiveModel) -> dict[str, Any]:
    return tensor(m, "layer.weight")["pipeline"][1]


def set_payload(m: ArchiveModel, blob: dict[str, Any], data: bytes) -> None:
    m.payload[id(blob)] = data


def copy_blob(m: ArchiveModel, blob: dict[str, Any]) -> dict[str, Any]:
    dup = dict(blob)
    m.payload[id(dup)] = m.payload[id(blob)]
    return dup


# ----------------------------------------------------------------------- video lies


def shape_lie(m: ArchiveModel, d: dict[str, bytes]) -> None:
    tensor(m, "layer.weight")["shape"] = [65, 64]


def frame_size_lie(m: ArchiveModel, d: dict[str, bytes]) -> None:
    """Geometry and shape consistent with each other, not with the bitstream."""
    tensor(m, "layer.weight")["shape"] = [64, 128]
    video(m)["frames"].update(cols=128, tile_cols=128)


def fewer_frames(m: ArchiveModel, d: dict[str, bytes]) -> None:
    t = tensor(m, "layer.weight")
    t["blobs"].remove(stage_blobs(m, "layer.weight", 1)[1])


def more_frames(m: ArchiveModel, d: dict[str, bytes]) -> None:
    t = tensor(m, "layer.weight")
    t["blobs"].append(copy_blob(m, stage_blobs(m, "layer.weight", 1)[0]))


def more_frames_in_geometry(m: ArchiveModel, d: dict[str, bytes]) -> None:
    video(m)["frames"]["tile_rows"] = 16  # 4 frames of 16 rows; the file has 2 blobs
    video(m)["frame_hashes"] *= 2


def frames_swapped(m: ArchiveModel, d: dict[str, bytes]) -> None:
    a, b = stage_blobs(m, "layer.weight", 1)
    pa, pb = m.payload[id(a)], m.payload[id(b)]
    set_payload(m, a, pb)
    set_payload(m, b, pa)


def other_resolution(m: ArchiveModel, d: dict[str, bytes]) -> None:
    set_payload(m, stage_blobs(m, "layer.weight", 1)[0], d["vvc_16x48"])


def other_codec(m: ArchiveModel, d: dict[str, bytes]) -> None:
    set_payload(m, stage_blobs(m, "layer.weight", 1)[0], d["hevc_frame"])


def truncated_frame(m: ArchiveModel, d: dict[str, bytes]) -> None:
    b = stage_blobs(m, "layer.weight", 1)[1]
    set_payload(m, b, m.payload[id(b)][: len(m.payload[id(b)]) // 2])


def garbage_frame(m: ArchiveModel, d: dict[str, bytes]) -> None:
    set_payload(m, stage_blobs(m, "layer.weight", 1)[0],
                np.random.default_rng(3).bytes(900))


def empty_frame(m: ArchiveModel, d: dict[str, bytes]) -> None:
    set_payload(m, stage_blobs(m, "layer.weight", 1)[0], b"\x00\x00\x00\x01")


def two_frames_in_one_blob(m: ArchiveModel, d: dict[str, bytes]) -> None:
    a, b = stage_blobs(m, "layer.weight", 1)
    set_payload(m, a, m.payload[id(a)] + m.payload[id(b)])


def huge_geometry(m: ArchiveModel, d: dict[str, bytes]) -> None:
    """64 frames of 16384x16384 (32 GiB of samples) declared by a ~100 kB file."""
    n, side = 64, 16384
    t = tensor(m, "layer.weight")
    t["shape"] = [n * side, side]
    video(m)["frames"].update(rows=n * side, cols=side, tile_rows=side, tile_cols=side)
    video(m)["frame_hashes"] = ["0" * 16] * n
    params, frame = stage_blobs(m, "layer.weight", 0)[0], stage_blobs(m, "layer.weight", 1)[0]
    t["blobs"] = [params] + [copy_blob(m, frame) for _ in range(n)]


def pix_fmt_lie(m: ArchiveModel, d: dict[str, bytes]) -> None:
    video(m)["pix_fmt"] = "gray16le"


def bits_lie(m: ArchiveModel, d: dict[str, bytes]) -> None:
    video(m)["bits"] = 16


def frame_geometry_oversized(m: ArchiveModel, d: dict[str, bytes]) -> None:
    video(m)["frames"].update(tile_rows=1 << 20, tile_cols=1 << 20)


def affine_params_short(m: ArchiveModel, d: dict[str, bytes]) -> None:
    b = stage_blobs(m, "layer.weight", 0)[0]
    set_payload(m, b, m.payload[id(b)][:-2])


def affine_params_nan(m: ArchiveModel, d: dict[str, bytes]) -> None:
    b = stage_blobs(m, "layer.weight", 0)[0]
    set_payload(m, b, b"\xff\x7f" * (len(m.payload[id(b)]) // 2))  # float16 NaNs


BLOCKDCT = {"id": "blockdct", "bits": 10, "block": 32, "precision": 14, "scale": 1.0,
            "offset": 0.0}


def blockdct_with_a_blob(m: ArchiveModel, d: dict[str, bytes]) -> None:
    """A blockdct stage (which owns no blob) in place of affine, the params blob left."""
    tensor(m, "layer.weight")["pipeline"][0] = dict(BLOCKDCT)


def blockdct_scale_nan(m: ArchiveModel, d: dict[str, bytes]) -> None:
    t = tensor(m, "layer.weight")
    t["pipeline"][0] = {**BLOCKDCT, "scale": float("nan")}
    t["blobs"] = [b for b in t["blobs"] if b["stage"] != 0]


def video_stage_first(m: ArchiveModel, d: dict[str, bytes]) -> None:
    t = tensor(m, "layer.weight")
    t["pipeline"].reverse()


# ----------------------------------------------------------------------- exact lies


def exact_declares_8gib(m: ArchiveModel, d: dict[str, bytes]) -> None:
    t = tensor(m, "w.f64")
    t["shape"] = [1 << 30]
    t["pipeline"][0]["chunk_elems"] = 1 << 30


def exact_zero_dim_huge_others(m: ArchiveModel, d: dict[str, bytes]) -> None:
    """0 elements, so within the index's size limit, but no numpy array has this shape."""
    tensor(m, "empty")["shape"] = [3, 0, 1 << 62]


def _huge_zstd_frame() -> bytes:
    """The start of a real zstd frame whose header declares 2**40 bytes of content."""
    cobj = zstandard.ZstdCompressor().compressobj(size=1 << 40)
    return cobj.compress(b"\x00" * 64) + cobj.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)


def exact_plane_declares_huge(m: ArchiveModel, d: dict[str, bytes]) -> None:
    """w.f32: 128 float32 in one blob; plane 0 becomes a zstd frame declaring 1 TiB."""
    frame = _huge_zstd_frame()
    planes = [(1, frame)] + [(0, b"\x00" * 128)] * 3
    head = bytes([3]) + b"".join(bytes([mode]) + len(p).to_bytes(4, "little") for mode, p in planes)
    set_payload(m, stage_blobs(m, "w.f32", 0)[0], head + b"".join(p for _, p in planes))


def exact_plane_length_lie(m: ArchiveModel, d: dict[str, bytes]) -> None:
    b = stage_blobs(m, "w.f32", 0)[0]
    data = bytearray(m.payload[id(b)])
    data[2:6] = (0xFFFFFFF0).to_bytes(4, "little")
    set_payload(m, b, bytes(data))


def exact_rotation_lie(m: ArchiveModel, d: dict[str, bytes]) -> None:
    b = stage_blobs(m, "w.f32", 0)[0]
    set_payload(m, b, b"\xc8" + m.payload[id(b)][1:])


def exact_chunk_lie(m: ArchiveModel, d: dict[str, bytes]) -> None:
    tensor(m, "w.f32")["pipeline"][0]["chunk_elems"] = 7


def exact_bool_lie(m: ArchiveModel, d: dict[str, bytes]) -> None:
    """mask.bool's plane holds a 2: not a bool."""
    b = stage_blobs(m, "mask.bool", 0)[0]
    data = bytearray(m.payload[id(b)])
    if data[1] == 0:  # raw plane: the bytes follow the 6-byte header
        data[6] = 2
    set_payload(m, b, bytes(data))


def exact_blob_of_other_tensor(m: ArchiveModel, d: dict[str, bytes]) -> None:
    set_payload(m, stage_blobs(m, "w.f32", 0)[0], m.payload[id(stage_blobs(m, "w.bf16", 0)[0])])


# ------------------------------------------------------------------ attachment lies


def attachment(m: ArchiveModel, name: str) -> dict[str, Any]:
    return next(a for a in m.attachment_dicts() if a["name"] == name)


def attachment_size_2_63(m: ArchiveModel, d: dict[str, bytes]) -> None:
    attachment(m, "config.json")["size"] = 1 << 63


def attachment_size_lie(m: ArchiveModel, d: dict[str, bytes]) -> None:
    attachment(m, "config.json")["size"] += 1


def attachment_zstd_declares_huge(m: ArchiveModel, d: dict[str, bytes]) -> None:
    a = attachment(m, "config.json")
    a["size"] = 1 << 40
    set_payload(m, a["blob"], _huge_zstd_frame())


def attachment_zstd_no_content_size(m: ArchiveModel, d: dict[str, bytes]) -> None:
    """A frame without a declared size, and an index size far beyond what it can hold."""
    a = attachment(m, "config.json")
    a["size"] = 1 << 34
    set_payload(m, a["blob"],
                zstandard.ZstdCompressor(write_content_size=False).compress(b"{}" * 100))


def attachment_raw_declared_zstd(m: ArchiveModel, d: dict[str, bytes]) -> None:
    attachment(m, "tokenizer.model")["encoding"] = "zstd"


VIDEO_LIES: list[tuple[str, Lie, type[LlmcError]]] = [
    ("shape differs from frame geometry", shape_lie, CodecError),
    ("wrong frame size (geometry and shape agree, bitstream does not)", frame_size_lie,
     CodecError),
    ("one frame missing", fewer_frames, CodecError),
    ("one frame too many", more_frames, CodecError),
    ("geometry declares more frames than stored", more_frames_in_geometry, CodecError),
    ("frames swapped", frames_swapped, CodecError),
    ("frame of another resolution (16x48)", other_resolution, CodecError),
    ("frame of another codec (HEVC in VVC)", other_codec, CodecError),
    ("truncated bitstream", truncated_frame, CodecError),
    ("random bytes as bitstream", garbage_frame, CodecError),
    ("start code only", empty_frame, CodecError),
    ("two frames in one blob", two_frames_in_one_blob, CodecError),
    ("64 frames of 16384x16384 declared", huge_geometry, LlmcError),
    ("pixel format lie", pix_fmt_lie, CodecError),
    ("bit depth lie", bits_lie, CodecError),
    ("frame side beyond the limit", frame_geometry_oversized, CodecError),
    ("affine params blob short", affine_params_short, CodecError),
    ("affine params NaN", affine_params_nan, CodecError),
    ("blockdct stage owning a blob", blockdct_with_a_blob, CodecError),
    ("blockdct scale NaN", blockdct_scale_nan, CodecError),
    ("stages in the wrong order", video_stage_first, CodecError),
]
EXACT_LIES: list[tuple[str, Lie, type[LlmcError]]] = [
    ("exact tensor declares 8 GiB in one 89-byte blob", exact_declares_8gib, LimitError),
    ("zstd plane declares 1 TiB", exact_plane_declares_huge, CodecError),
    ("plane length beyond the blob", exact_plane_length_lie, CodecError),
    ("rotation out of range", exact_rotation_lie, CodecError),
    ("chunk size lie", exact_chunk_lie, CodecError),
    ("bool byte 2", exact_bool_lie, CodecError),
    ("blob of another tensor", exact_blob_of_other_tensor, CodecError),
    ("zero dimension beside a 2**62 one", exact_zero_dim_huge_others, LimitError),
]
ATTACHMENT_LIES: list[tuple[str, Lie, type[LlmcError]]] = [
    ("attachment size 2**63", attachment_size_2_63, LimitError),
    ("attachment size off by one", attachment_size_lie, CodecError),
    ("attachment zstd frame declares 1 TiB", attachment_zstd_declares_huge, LimitError),
    ("attachment frame without size, index 16 GiB", attachment_zstd_no_content_size,
     LimitError),
    ("raw attachment declared zstd", attachment_raw_declared_zstd, CodecError),
]


@pytest.fixture(scope="module")
def donors(tmp_path_factory: pytest.TempPathFactory, seed_dir: Path) -> dict[str, bytes]:
    """A VVC frame of another resolution (16x48) and an HEVC frame of the same size."""
    d = tmp_path_factory.mktemp("donors")
    out: dict[str, bytes] = {}
    try:
        p = llmc_format.save_file(
            {"w": np.random.default_rng(5).standard_normal((16, 48)).astype(np.float32)},
            d / "small.llmc", codec="vvc", min_lossy_numel=1, jobs=1)
    except LlmcError:
        pytest.skip("no VVC encoder")
    m = ArchiveModel.parse(Path(p).read_bytes())
    out["vvc_16x48"] = m.payload[id(stage_blobs(m, "w", 1)[0])]
    h = seed_dir / "lossy_hevc.llmc"
    if h.exists():
        mh = ArchiveModel.parse(h.read_bytes())
        out["hevc_frame"] = mh.payload[id(stage_blobs(mh, "layer.weight", 1)[0])]
    return out


def _check(path: Path, read: Callable[[Any], Any], error: type[LlmcError]) -> None:
    """Open works (the lie passed the container), reading raises ``error`` without
    allocating what the lie declares, and verify reports damage."""
    tracemalloc.start()
    try:
        with llmc_format.safe_open(path) as f:
            tracemalloc.reset_peak()
            with pytest.raises(error):
                read(f)
            peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    report = llmc_format.verify(path)
    assert not report.ok
    return peak


@pytest.mark.parametrize(("label", "lie", "error"), VIDEO_LIES, ids=[x[0] for x in VIDEO_LIES])
def test_video_lie_is_a_typed_error(label: str, lie: Lie, error: type[LlmcError],
                                    seed_dir: Path, donors: dict[str, bytes], forge,
                                    tmp_path: Path) -> None:
    src = seed_dir / "lossy_vvc.llmc"
    if not src.exists():
        pytest.skip("no VVC encoder")
    if lie is other_codec and "hevc_frame" not in donors:
        pytest.skip("no HEVC encoder")
    path = forge(src, lambda m: lie(m, donors), tmp_path / "lie.llmc")
    peak = _check(path, lambda f: f.get_tensor("layer.weight"), error)
    with llmc_format.safe_open(path) as f:  # the honest tensor beside it still reads
        assert f.get_tensor("layer.bias").shape == (64,)
    if lie is not huge_geometry:  # that one reserves (never touches) its declared output
        assert peak < MEMORY_LIMIT, peak


@pytest.mark.parametrize(("label", "lie", "error"), EXACT_LIES, ids=[x[0] for x in EXACT_LIES])
def test_exact_lie_is_a_typed_error(label: str, lie: Lie, error: type[LlmcError],
                                    seed_dir: Path, forge, tmp_path: Path) -> None:
    path = forge(seed_dir / "exact_dtypes.llmc", lambda m: lie(m, {}), tmp_path / "lie.llmc")
    name = {exact_declares_8gib: "w.f64", exact_bool_lie: "mask.bool",
            exact_zero_dim_huge_others: "empty"}.get(lie, "w.f32")
    peak = _check(path, lambda f: f.get_tensor(name), error)
    assert peak < MEMORY_LIMIT, peak


@pytest.mark.parametrize(("label", "lie", "error"), ATTACHMENT_LIES,
                         ids=[x[0] for x in ATTACHMENT_LIES])
def test_attachment_lie_is_a_typed_error(label: str, lie: Lie, error: type[LlmcError],
                                         seed_dir: Path, forge, tmp_path: Path) -> None:
    path = forge(seed_dir / "exact_dtypes.llmc", lambda m: lie(m, {}), tmp_path / "lie.llmc")
    name = "tokenizer.model" if lie is attachment_raw_declared_zstd else "config.json"
    peak = _check(path, lambda f: f.read_attachment(name), error)
    assert peak < MEMORY_LIMIT, peak


def test_the_lie_table_covers_every_class() -> None:
    """For the report: how many lies of each class the tests above try."""
    assert (len(VIDEO_LIES), len(EXACT_LIES), len(ATTACHMENT_LIES)) == (21, 8, 5)
