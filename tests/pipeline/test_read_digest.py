"""digest.decoded is checked whenever a whole tensor is decoded (FORMAT.md §5.6, §8.1)."""

from __future__ import annotations

import shutil
from pathlib import Path

import msgpack
import pytest

import llmc_format
from llmc_format.container import layout
from llmc_format.errors import DigestError

VECTORS = Path(__file__).resolve().parents[2] / "spec" / "vectors"


def _rewrite_index(path: Path, mutate) -> None:
    """Apply ``mutate`` to the index and re-checksum it: a wrong but intact index."""
    data = path.read_bytes()
    f = layout.Footer.unpack(data[-48:], len(data) - 48)
    obj = msgpack.unpackb(data[f.index_offset: f.index_offset + f.index_length])
    mutate(obj)
    raw = msgpack.packb(obj, use_bin_type=True)
    path.write_bytes(data[: f.index_offset] + raw
                     + layout.Footer(f.index_offset, len(raw), layout.checksum(raw)).pack())


def _entry(obj: dict, name: str) -> dict:
    return next(t for t in obj["tensors"] if t["name"] == name)


def test_wrong_but_checksummed_config_is_a_digest_mismatch(tmp_path: Path) -> None:
    """A blockdct scale doubled (still a valid binary32 config) decodes without any error
    but to other values: only digest.decoded can tell, and the reader reports it."""
    path = tmp_path / "v.llmc"
    shutil.copy(VECTORS / "v1-lossy-vvc-blockdct.llmc", path)
    _rewrite_index(path, lambda o: _entry(o, "mlp.weight")["pipeline"][0].update(
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


def test_salvage_mode_skips_the_digest(tmp_path: Path) -> None:
    path = tmp_path / "e.llmc"
    shutil.copy(VECTORS / "v1-exact-basic.llmc", path)
    _rewrite_index(path, lambda o: _entry(o, "q.i8")["digest"].update(decoded=1))
    with llmc_format.safe_open(path) as f, pytest.raises(DigestError):
        f.get_tensor("q.i8")
    with llmc_format.safe_open(path, verify_checksums=False) as f:
        assert f.get_tensor("q.i8").shape == (16, 16)
