"""Every bit of an archive is protected: any single flip makes ``verify`` fail.

Fast: every bit of the header and footer of a tiny real archive, plus a reproducible
sample of the rest. Slow: ``tools/bitflip_sweep.py`` over every bit of the default
archive (exact tensors of several dtypes, attachments, a VVC tensor).
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from tools.bitflip_sweep import make_archive, structure_flips, sweep


def test_header_footer_and_sampled_flips_are_all_detected(tmp_path: Path) -> None:
    path = make_archive(tmp_path / "tiny.llmc", video=False, tiny=True)
    n = path.stat().st_size
    rng = random.Random(0)
    sample = [(rng.randrange(64, n - 48), rng.randrange(8)) for _ in range(250)]
    result = sweep(path, only=structure_flips(path) + sample, workdir=tmp_path)
    print(result.summary())
    assert result.tried == 112 * 8 + 250
    assert result.undetected == []
    assert result.detected == result.tried


@pytest.mark.slow
def test_every_bit_of_the_default_archive(tmp_path: Path) -> None:
    path = make_archive(tmp_path / "full.llmc", video=True)
    result = sweep(path, workdir=tmp_path)
    print(result.summary())
    assert result.tried == 8 * path.stat().st_size
    assert result.undetected == []
