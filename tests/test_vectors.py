"""Published conformance vectors keep reading exactly as they did (spec/FORMAT.md §11)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import llmc_format
from llmc_format import errors
from llmc_format.container import layout
from llmc_format.pipeline.pack import tensor_digest

VECTORS = Path(__file__).resolve().parent.parent / "spec" / "vectors"
CASES = sorted(p.stem for p in VECTORS.glob("*.json"))


def test_vectors_exist() -> None:
    assert "v1-exact-basic" in CASES
    assert any(c.startswith("bad-") for c in CASES)


@pytest.mark.parametrize("name", CASES)
def test_vector(name: str) -> None:
    expected = json.loads((VECTORS / f"{name}.json").read_text())
    path = VECTORS / f"{name}.llmc"
    if not expected["valid"]:
        err = getattr(errors, expected["error"])
        with pytest.raises(err), llmc_format.safe_open(path) as f:
            for k in f.keys():
                f.get_tensor(k)
        return
    with llmc_format.safe_open(path) as f:
        assert sorted(f.keys()) == sorted(expected["tensors"])
        for k, want in expected["tensors"].items():
            arr = f.get_tensor(k)
            assert list(arr.shape) == want["shape"], k
            assert f.info(k)["dtype"] == want["dtype"], k
            assert tensor_digest(arr) == want["xxh3"], k
        for a, digest in expected["attachments"].items():
            assert layout.checksum(f.read_attachment(a)) == digest
    assert llmc_format.verify(path).ok


DIGESTS = VECTORS / "SHA256SUMS"


def test_every_vector_file_is_pinned_by_its_sha256() -> None:
    """A vector is never regenerated silently: SHA256SUMS lists each file's digest."""
    import hashlib

    pinned = dict(reversed(line.split("  ", 1)) for line in DIGESTS.read_text().splitlines())
    files = sorted(p.name for p in VECTORS.glob("*.llmc"))
    assert sorted(pinned) == files
    for name in files:
        assert hashlib.sha256((VECTORS / name).read_bytes()).hexdigest() == pinned[name], name


@pytest.mark.parametrize("name", CASES)
def test_vector_under_a_strict_reader(name: str) -> None:
    """verify --strict: bitstream rules and the installed second decoders (docs/decoders.md).

    A vector whose JSON has ``strict`` is known bad encoder output: a lenient reader reads
    it (test_vector), a strict one reports exactly the tensor named."""
    expected = json.loads((VECTORS / f"{name}.json").read_text())
    if not expected["valid"]:
        pytest.skip("invalid vector: no tensor to hold to the bitstream rules")
    report = llmc_format.verify(VECTORS / f"{name}.llmc", strict=True)
    if "strict" not in expected:
        assert report.ok, [t.problem for t in report.tensors if not t.ok]
        return
    bad = [t for t in report.tensors if not t.ok]
    assert [t.name for t in bad] == [expected["strict"]["tensor"]]
    assert f"frame {expected['strict']['frame']}" in bad[0].problem
