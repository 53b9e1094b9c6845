"""Every lossy archive records what encoded and what decoded its frames (docs/archival.md)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

import llmc_format
from llmc_format.container.reader import Reader


def test_lossy_archive_records_encoder_ffmpeg_and_decoder(tmp_path: Path) -> None:
    w = np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32)
    path = llmc_format.save_file({"w": w}, tmp_path / "v.llmc", codec="vvc",
                                 min_lossy_numel=1, jobs=1)
    with Reader(path) as r:
        video = r.tensor("w").pipeline[-1]
        assert video["encoder"] == "libvvenc"
        assert video["encoder_version"] not in ("", "unknown")
        assert video["ffmpeg_version"]
        dec = r.metadata["decoder"]
        assert set(dec) == {"pyav", "libavcodec"}
        assert all(isinstance(v, str) and v[0].isdigit() for v in dec.values()), dec
        assert r.metadata["tool"].startswith("llmc-format ")


def test_exact_archive_names_only_the_tool(tmp_path: Path) -> None:
    path = llmc_format.save_file({"w": np.ones(4, np.float32)}, tmp_path / "e.llmc")
    with Reader(path) as r:
        assert "decoder" not in r.metadata
        assert r.metadata["tool"].startswith("llmc-format ")
