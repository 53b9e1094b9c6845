"""``llmc extract``: the raw bitstreams plus the sidecar rebuild the tensor without llmc.

The check is the one a user without llmc would do: decode each extracted frame with the
FFmpeg binary, undo the sample shift, place the frames by the sidecar's boxes and apply
the sidecar's dequantization in plain numpy — and compare bit for bit with what llmc's
own reader returns.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
from typer.testing import CliRunner

import llmc_format
from llmc_format.cli import app
from llmc_format.pipeline.extract import bitstream_paths

runner = CliRunner()

#: ~75 k weights cut into 2 frames (rows 0-152 and 152-300, the last padded) by a small
#: frame size: exercises the multi-frame naming, the tiling and the padding.
SMALL_FRAMES = {"target_pixels": 65536}


@pytest.fixture(scope="module")
def weight(minilm_encoder_weights: dict[str, np.ndarray]) -> np.ndarray:
    w = minilm_encoder_weights["encoder.layer.0.attention.self.query.weight"]
    return np.ascontiguousarray(w[:300, :250])  # 250 columns: not a multiple of 8 -> padding


def _pack(path: Path, tensors: dict[str, np.ndarray], codec: str) -> Path:
    preset = "faster" if codec == "vvc" else "ultrafast"
    return llmc_format.save_file(tensors, path, codec=codec, qp=30, preset=preset,
                                 video=dict(SMALL_FRAMES))


def _ffmpeg_luma(path: Path, demuxer: str, pix_fmt: str, height: int, width: int) -> np.ndarray:
    """Decode one frame with the FFmpeg command line; return its luma plane."""
    import imageio_ffmpeg

    raw = subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-f", demuxer, "-i", str(path),
         "-f", "rawvideo", "-pix_fmt", pix_fmt, "-"],
        capture_output=True, check=True,
    ).stdout
    return np.frombuffer(raw, dtype="<u2", count=height * width).reshape(height, width)


def _codes(sidecar: dict, folder: Path) -> np.ndarray:
    """The integer codes (the matrix) from the extracted frames: FFmpeg, the sidecar's
    sample rule and frame boxes, numpy."""
    rows, cols = sidecar["matrix"]["rows"], sidecar["matrix"]["cols"]
    demuxer = sidecar["ffmpeg_decode"].split()[2]
    smp = sidecar["samples"]
    codes = np.empty((rows, cols), dtype=np.int64)
    for fr in sidecar["frames"]:
        s = _ffmpeg_luma(folder / fr["file"], demuxer, smp["pix_fmt"], fr["coded_height"],
                         fr["coded_width"]).astype(np.int64)
        shift = smp["shift"]
        q = np.minimum((s + ((1 << shift) >> 1)) >> shift, 2 ** smp["bits"] - 1)
        (r0, r1), (c0, c1) = fr["rows"], fr["cols"]
        codes[r0:r1, c0:c1] = q[: r1 - r0, : c1 - c0]
    return codes


def _rebuild(sidecar: dict, folder: Path) -> np.ndarray:
    """The tensor from the extracted files, using only the sidecar, FFmpeg and numpy."""
    codes = _codes(sidecar, folder)
    dq = sidecar["dequantization"]
    assert dq["granularity"] == "row"
    scale = np.array(dq["scale"], dtype=np.float32)  # (rows, 1)
    offset = np.array(dq["offset"], dtype=np.float32)
    t = codes.astype(np.float32) * scale  # binary32 multiply
    u = t + offset  # then a separate binary32 add (numpy never fuses)
    big = np.float32(np.finfo(np.float32).max)
    assert sidecar["dtype"] == "float32"
    return np.clip(u, -big, big).astype(np.float32).reshape(sidecar["shape"])


@pytest.mark.parametrize("codec", ["vvc", "hevc"])
def test_raw_extract_rebuilds_tensor_bit_exact(codec: str, weight: np.ndarray, tmp_path: Path) -> None:
    arc = _pack(tmp_path / "m.llmc", {"w": weight}, codec)
    ext = {"vvc": ".266", "hevc": ".265"}[codec]
    r = runner.invoke(app, ["extract", str(arc), "w", "--raw", "-o", str(tmp_path / f"x{ext}")],
                      catch_exceptions=False)
    assert r.exit_code == 0, r.output
    sidecar = json.loads((tmp_path / "x.json").read_text())
    assert [f["file"] for f in sidecar["frames"]] == [f"x.000{ext}", f"x.001{ext}"]
    # two bands of 150 rows, rounded up to the codecs' 32-row block grid
    split = 160
    assert sidecar["frames"][1]["rows"] == [split, 300]
    assert sidecar["frames"][1]["coded_height"] == -(-(300 - split) // 8) * 8  # padded to 8
    assert sidecar["frames"][0]["coded_width"] == 256
    assert "spec/FORMAT.md" in sidecar["dequantization"]["reference"]
    for fr in sidecar["frames"]:  # the blobs exactly as stored
        assert (tmp_path / fr["file"]).stat().st_size == fr["bytes"]

    rebuilt = _rebuild(sidecar, tmp_path)
    with llmc_format.safe_open(arc) as f:
        expected = f.get_tensor("w")
    assert rebuilt.dtype == expected.dtype and rebuilt.shape == expected.shape
    assert rebuilt.tobytes() == expected.tobytes()
    assert not np.array_equal(expected, weight)  # lossy: the check is not trivially on the source


def _rebuild_blockdct(sidecar: dict, folder: Path) -> np.ndarray:
    """The blockdct tensor from the raw files, the sidecar's matrix and steps, and numpy."""
    q = _codes(sidecar, folder)
    rows, cols = q.shape
    dq = sidecar["dequantization"]
    b, p = dq["block"], dq["precision"]
    m = np.array(dq["dct_matrix"], dtype=np.int64)
    c = q - 2 ** (dq["bits"] - 1)
    s32, o32 = np.float32(dq["scale"]), np.float32(dq["offset"])
    out = (c.astype(np.float32) * s32 + o32)  # the edge
    core_r, core_c = b * (rows // b), b * (cols // b)
    t32 = np.float32(s32 * np.float32(2.0 ** (-2 * p)))
    for r in range(0, core_r, b):
        for k in range(0, core_c, b):
            z = m @ c[r:r + b, k:k + b] @ m.T  # exact integers
            out[r:r + b, k:k + b] = z.astype(np.float32) * t32 + o32
    big = np.float32(np.finfo(np.float32).max)
    return np.clip(out, -big, big).astype(np.float32).reshape(sidecar["shape"])


def test_raw_extract_blockdct_rebuilds_tensor_bit_exact(weight: np.ndarray, tmp_path: Path) -> None:
    """A target pack's default (blockdct then vvc) extracts too: the sidecar says the codes
    are block inverse-DCT codes and carries the integer matrix and the steps."""
    arc = llmc_format.save_file({"w": weight}, tmp_path / "m.llmc", codec="vvc", bpw=3.0,
                                preset="faster", video=dict(SMALL_FRAMES), jobs=1)
    r = runner.invoke(app, ["extract", str(arc), "w", "--raw", "-o", str(tmp_path / "x")],
                      catch_exceptions=False)
    assert r.exit_code == 0, r.output
    sidecar = json.loads((tmp_path / "x.json").read_text())
    assert sidecar["dequantization"]["stage"] == "blockdct"
    assert len(sidecar["dequantization"]["dct_matrix"]) == sidecar["dequantization"]["block"]
    rebuilt = _rebuild_blockdct(sidecar, tmp_path)
    with llmc_format.safe_open(arc) as f:
        expected = f.get_tensor("w")
    assert rebuilt.tobytes() == expected.tobytes()
    assert not np.array_equal(expected, weight)


def test_raw_extract_with_diagscale_rebuilds_tensor_bit_exact(weight: np.ndarray,
                                                              tmp_path: Path) -> None:
    """[diagscale, affine, hevc]: the sidecar's ``after_dequantization`` carries the stored
    multipliers and steps; applying them to the dequantized values rebuilds the tensor."""
    rng = np.random.default_rng(0)
    c, r = rng.uniform(0.25, 4.0, weight.shape[1]), rng.uniform(0.5, 2.0, weight.shape[0])
    arc = llmc_format.save_file({"w": weight}, tmp_path / "m.llmc", codec="hevc", qp=30,
                                preset="ultrafast", video=dict(SMALL_FRAMES),
                                diagscale={"w": (c, r)})
    r_ = runner.invoke(app, ["extract", str(arc), "w", "--raw", "-o", str(tmp_path / "x")],
                       catch_exceptions=False)
    assert r_.exit_code == 0, r_.output
    sidecar = json.loads((tmp_path / "x.json").read_text())
    assert sidecar["dequantization"]["stage"] == "affine"
    assert sidecar["dequantization"]["output_dtype"] == "float32"
    (ds,) = sidecar["after_dequantization"]
    assert ds["stage"] == "diagscale" and ds["output_dtype"] == "float32"
    assert ds["col_scale"] == c.astype(np.float16).astype(float).tolist()
    y = _rebuild(sidecar, tmp_path)  # the affine stage's float32 values
    t = y * np.array(ds["col_scale"], dtype=np.float32)[None, :]  # binary32 multiply
    u = t * np.array(ds["row_scale"], dtype=np.float32)[:, None]  # then the second one
    big = np.float32(np.finfo(np.float32).max)
    rebuilt = np.clip(u, -big, big).astype(np.float32)
    with llmc_format.safe_open(arc) as f:
        expected = f.get_tensor("w")
    assert rebuilt.tobytes() == expected.tobytes()
    assert not np.array_equal(y, expected)  # the multipliers did something


def test_extract_npy_and_errors(weight: np.ndarray, tmp_path: Path) -> None:
    bias = np.linspace(-1, 1, 7).astype(ml_dtypes.bfloat16)
    arc = _pack(tmp_path / "m.llmc", {"w": weight, "b": bias}, "vvc")
    with llmc_format.safe_open(arc) as f:
        w_read, b_read = f.get_tensor("w"), f.get_tensor("b")

    r = runner.invoke(app, ["extract", str(arc), "w", "-o", str(tmp_path / "w")])
    assert r.exit_code == 0, r.output
    got = np.load(tmp_path / "w.npy")
    assert got.dtype == np.float32 and got.tobytes() == w_read.tobytes()
    r = runner.invoke(app, ["extract", str(arc), "b", "-o", str(tmp_path / "b.npy")])
    assert r.exit_code == 0, r.output
    assert np.array_equal(np.load(tmp_path / "b.npy"), b_read.astype(np.float32))  # widened, exact

    r = runner.invoke(app, ["extract", str(arc), "w", "-o", str(tmp_path / "w.npy")])
    assert r.exit_code == 3 and "--force" in r.output  # no silent overwrite
    r = runner.invoke(app, ["extract", str(arc), "b", "--raw", "-o", str(tmp_path / "b.266")])
    assert r.exit_code == 3 and "'b'" in r.output and "exact" in r.output
    r = runner.invoke(app, ["extract", str(arc), "nope", "--raw"])
    assert r.exit_code == 3 and "nope" in r.output


def test_bitstream_paths_naming(tmp_path: Path) -> None:
    one, side = bitstream_paths(tmp_path / "x.266", "vvc", 1)
    assert [p.name for p in one] == ["x.266"] and side.name == "x.json"
    many, _ = bitstream_paths(tmp_path / "a.b", "av1", 2)  # unknown suffix: kept in the stem
    assert [p.name for p in many] == ["a.b.000.obu", "a.b.001.obu"]
    big, _ = bitstream_paths(tmp_path / "y.265", "hevc", 1001)
    assert big[0].name == "y.0000.265" and big[-1].name == "y.1000.265"


def test_extract_into_a_directory(weight: np.ndarray, tmp_path: Path) -> None:
    """Found by hand: `-o outdir` (an existing directory) wrote outdir.npy beside it, and
    `-o newdir/` wrote newdir.npy; a directory gets the file named after the tensor."""
    arc = _pack(tmp_path / "m.llmc", {"model.w": weight}, "vvc")
    d = tmp_path / "out dir"
    d.mkdir()
    for given in (str(d), f"{d}/"):
        r = runner.invoke(app, ["extract", str(arc), "model.w", "-o", given, "--force"])
        assert r.exit_code == 0, r.output
        assert sorted(p.name for p in d.iterdir()) == ["model.w.npy"], r.output
        with llmc_format.safe_open(arc) as f:
            assert np.load(d / "model.w.npy").tobytes() == f.get_tensor("model.w").tobytes()
    r = runner.invoke(app, ["extract", str(arc), "model.w", "--raw", "-o", str(d)])
    assert r.exit_code == 0, r.output
    assert {p.name for p in d.iterdir()} >= {"model.w.000.266", "model.w.json"}
    r = runner.invoke(app, ["extract", str(arc), "model.w", "-o", str(tmp_path / "new") + "/"])
    assert r.exit_code == 3 and "no such directory" in r.output, r.output
    assert not (tmp_path / "new.npy").exists() and not (tmp_path / "new").exists()
