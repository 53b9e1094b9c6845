"""tools/cross_decode.py: counts per codec and decoder, known-bad vectors counted apart."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmc_format.codecs.video import crossdecode
from tools import cross_decode

VECTORS = Path(__file__).resolve().parents[2] / "spec" / "vectors"


def test_vectors_agree_and_the_known_bad_one_is_rejected() -> None:
    if crossdecode.find("vvc") is None or crossdecode.find("hevc") is None:
        pytest.skip("needs VVdeC and libde265 (docs/decoders.md)")
    paths, known_bad = cross_decode.vector_paths()
    assert known_bad == {"v1-lossy-vvc"}
    chosen = [p for p in paths if p.stem in ("v1-lossy-vvc", "v1-lossy-hevc", "v1-lossy-vvc-2")]
    results = cross_decode.run(chosen, known_bad, jobs=2)
    lines, ok = cross_decode.summarize(results)
    assert ok, "\n".join(lines)
    vvdec, de265 = crossdecode.find("vvc").describe(), crossdecode.find("hevc").describe()
    table = "\n".join(lines)
    assert f"| vvc | {vvdec} | 1 / 1 | 1 |" in table  # v1-lossy-vvc-2 agrees; the old one not
    assert f"| hevc | {de265} | 4 / 4 | – |" in table


def test_a_disagreement_fails_the_run() -> None:
    if crossdecode.find("vvc") is None:
        pytest.skip("needs VVdeC (docs/decoders.md)")
    results = cross_decode.run([VECTORS / "v1-lossy-vvc.llmc"], set(), jobs=1)  # not excused
    lines, ok = cross_decode.summarize(results)
    assert not ok and any("Trailing byte" in ln for ln in lines)
    assert cross_decode.main([str(VECTORS / "v1-lossy-vvc.llmc")]) == 1
