"""digest.decoded is checked whenever a whole tensor is decoded (FORMAT.md §5.6, §8.1)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import llmc_format
from llmc_format.errors import DigestError

VECTORS = Path(__file__).resolve().parents[2] / "spec" / "vectors"


def _entry(obj: dict, name: str) -> dict:
    return next(t for t in obj["tensors"] if t["name"] == name)


def test_wrong_but_checksummed_config_is_a_digest_mismatch(tmp_path: Path, rewrite_index) -> None:
    """A blockdct scale doubled (still a valid binary32 config) decodes without any error
    but to other values: only digest.decoded can tell, and the reader reports it."""
    path = tmp_path / "v.llmc"
    shutil.copy(VECTORS / "v1-lossy-vvc-blockdct.llmc", path)
    rewrite_index(path, lambda o: _entry(o, "mlp.weight")["pipeline"][0].update(
        scale=_entry(o, "mlp.weight")["pipeline"][0]["scale"] * 2))
    with llmc_format.safe_open(path) as f:
        with pytest.raises(DigestError, match=r"mlp\.weight") as info:
            f.get_tensor("mlp.weight")
        assert info.value.kind == "DigestMismatch"
        assert f.get_slice("mlp.weight")[0:32].shape == (32, 170)  # a row range has no digest
        f.get_tensor("attn.weight.bf16")  # the other tensor is untouched
    report = llmc_format.verify(path)
    assert not report.ok
    assert [t.name for t in report.tensors if not t.ok] == ["mlp.weight"]


def test_salvage_mode_skips_the_digest(tmp_path: Path, rewrite_index) -> None:
    path = tmp_path / "e.llmc"
    shutil.copy(VECTORS / "v1-exact-basic.llmc", path)
    rewrite_index(path, lambda o: _entry(o, "q.i8")["digest"].update(decoded=1))
    with llmc_format.safe_open(path) as f, pytest.raises(DigestError):
        f.get_tensor("q.i8")
    with llmc_format.safe_open(path, verify_checksums=False) as f:
        assert f.get_tensor("q.i8").shape == (16, 16)
