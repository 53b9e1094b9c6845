"""verify --strict and repair (pipeline/bitstreams.py) on the published bad vector and fresh archives."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import llmc_format
from llmc_format.codecs.video import crossdecode
from llmc_format.container.reader import Reader
from llmc_format.errors import BitstreamError
from llmc_format.pipeline import bitstreams
from llmc_format.pipeline.pack import tensor_digest
from llmc_format.pipeline.verify import verify

VECTORS = Path(__file__).resolve().parents[2] / "spec" / "vectors"
OLD = VECTORS / "v1-lossy-vvc.llmc"


def test_strict_verify_reports_the_console_text_a_plain_verify_accepts() -> None:
    assert verify(OLD).ok  # FFmpeg's decoder ignores the trailing text
    report = verify(OLD, strict=True)
    assert not report.ok and report.strict
    bad = {t.name: t for t in report.tensors if not t.ok}
    assert list(bad) == ["mlp.weight"]
    assert "console text" in bad["mlp.weight"].bitstream_problems[0]
    assert (report.video_blobs_checked, report.video_blobs_failed) == (1, 1)
    if crossdecode.find("vvc") is not None:  # VVdeC rejects it too
        assert any("Trailing byte" in p for p in bad["mlp.weight"].bitstream_problems)


def test_repair_cuts_the_text_and_nothing_else(tmp_path: Path) -> None:
    out = tmp_path / "fixed.llmc"
    report = bitstreams.repair(OLD, out, tool="test")
    assert report.output == str(out)
    assert report.repaired == {"mlp.weight": [(0, 104, report.repaired["mlp.weight"][0][2])]}
    assert report.repaired["mlp.weight"][0][2][0] == "ffmpeg"
    assert verify(out, strict=True).ok
    expected = json.loads((VECTORS / "v1-lossy-vvc.json").read_text())["tensors"]
    with llmc_format.safe_open(out) as f:
        for name, want in expected.items():
            assert tensor_digest(f.get_tensor(name)) == want["xxh3"], name
    with Reader(OLD) as a, Reader(out) as b:
        assert [t.pipeline for t in a.index.tensors] == [t.pipeline for t in b.index.tensors]
        old_blobs = [a.read_blob(x) for t in a.index.tensors for x in t.blobs]
        new_blobs = [b.read_blob(x) for t in b.index.tensors for x in t.blobs]
        assert new_blobs[1] == old_blobs[1][:-104] and old_blobs[1][-104:].startswith(b"Config")
        assert [x for i, x in enumerate(new_blobs) if i != 1] == [
            x for i, x in enumerate(old_blobs) if i != 1]
        assert b.metadata["repaired"]["bytes_removed"] == 104
        assert {k: v for k, v in b.metadata.items() if k != "repaired"} == a.metadata


def test_repairing_a_clean_archive_writes_nothing(tmp_path: Path) -> None:
    src = tmp_path / "clean.llmc"
    shutil.copy(VECTORS / "v1-lossy-vvc-blockdct.llmc", src)
    report = bitstreams.repair(src, tmp_path / "out.llmc")
    assert report.output is None and report.blobs == 0
    assert not (tmp_path / "out.llmc").exists()
    assert verify(src, strict=True).ok


def test_damage_other_than_console_text_is_not_repaired() -> None:
    with Reader(OLD) as r:
        vf = bitstreams.video_frames(r.tensor("mlp.weight"))[0]
        blob = r.read_blob(vf.ref)
    clean = blob[:-104]
    assert bitstreams.repair_blob(vf, clean, []) is None
    with pytest.raises(BitstreamError, match="no lossless repair"):
        bitstreams.repair_blob(vf, clean + b"\x00\x00\x01\x80", [])  # a broken NAL unit
    # text whose cut does not decode to the stored hash (the last slice bytes are gone too)
    with pytest.raises(BitstreamError, match="no lossless repair"):
        bitstreams.repair_blob(vf, clean[:-40] + b"Warning: something went wrong here\n", [])


def test_strict_verify_of_fresh_archives_of_every_codec(tmp_path: Path) -> None:
    w = (np.random.default_rng(3).standard_normal((64, 80)) * 0.02).astype(np.float32)
    for codec, opts in (("vvc", {}), ("hevc", {"preset": "ultrafast"}),
                        ("av1", {"preset": 12}), ("ffv1", {})):
        path = tmp_path / f"{codec}.llmc"
        llmc_format.save_file({"w": w}, path, codec=codec, qp=30, jobs=1,
                              min_lossy_numel=1024, **opts)
        report = verify(path, strict=True)
        assert report.ok, (codec, [t.problem for t in report.tensors])
        assert report.video_blobs_checked == 1 and report.video_blobs_failed == 0, codec
        names = report.second_decoders[codec]
        assert names == [d.describe() for d in crossdecode.find_all(codec)]
