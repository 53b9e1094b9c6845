"""Names that would clobber or break what unpack writes are refused at open — by ``verify``
too — before anything is written.

Each archive is real and honest but for its names, rewritten into the index with valid
checksums (what an attacker or a buggy writer could produce).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

import llmc_format
from llmc_format.cli import app
from llmc_format.container.writer import Writer
from llmc_format.errors import SourceError
from llmc_format.io.base import Source, SourceTensor
from llmc_format.pipeline.pack import encode_one, write_packed

runner = CliRunner()
Rewrite = Callable[[Path, Callable[[dict[str, Any]], None]], None]


def _archive(path: Path) -> Path:
    with Writer(path) as w:
        write_packed(w, encode_one("w", np.ones((4, 4), np.float32), [{"id": "exact"}]))
        write_packed(w, encode_one("v", np.zeros(3, np.float32), [{"id": "exact"}]))
        w.add_attachment("config.json", b'{"model_type": "llama"}')
        w.add_attachment("other.txt", b"hello")
    return path


CASES: dict[str, tuple[list[str] | None, list[str] | None]] = {
    # case: (tensor names, attachment names) replacing ["w", "v"] / ["config.json", "other.txt"]
    "attachment model.safetensors": (None, ["model.safetensors", "other.txt"]),
    "attachment shard name": (None, ["config.json", "model-00001-of-00002.safetensors"]),
    "attachment index json": (None, ["model.safetensors.index.json", "other.txt"]),
    "attachment pytorch_model.bin": (None, ["config.json", "pytorch_model.bin"]),
    "attachment model.gguf": (None, ["config.json", "model.gguf"]),
    "tensor __metadata__": (["__metadata__", "v"], None),
    "a and a/b": (None, ["a", "a/b"]),
    "case-folding duplicates": (None, ["config.json", "CONFIG.json"]),
    "overlong component": (None, ["config.json", "x" * 256]),
    "NUL": (None, ["config.json", "a\x00b"]),
    "escape sequence": (None, ["config.json", "a\x1b]0;pwned\x07"]),
    "Windows device": (None, ["config.json", "NUL.txt"]),
    "empty component": (None, ["config.json", "a//b"]),
    "staging marker": (None, ["config.json", ".llmc-unpack-stage"]),
}


@pytest.fixture(params=sorted(CASES))
def hostile(request: pytest.FixtureRequest, tmp_path: Path, rewrite_index: Rewrite) -> Path:
    tensors, attachments = CASES[request.param]
    path = _archive(tmp_path / "h.llmc")

    def mutate(obj: dict[str, Any]) -> None:
        for entry, name in zip(obj["tensors"], tensors or [], strict=False):
            entry["name"] = name
        for entry, name in zip(obj["attachments"], attachments or [], strict=False):
            entry["name"] = name

    rewrite_index(path, mutate)
    return path


def test_open_refuses_it(hostile: Path) -> None:
    with pytest.raises(llmc_format.FormatError):
        llmc_format.safe_open(hostile)


def test_verify_reports_it(hostile: Path) -> None:
    r = runner.invoke(app, ["verify", str(hostile)])
    assert r.exit_code == 1, r.output
    assert "Traceback" not in r.output
    report = llmc_format.verify(hostile)
    assert not report.ok and report.file_problems


@pytest.mark.parametrize("fmt", ["safetensors", "pt", "gguf"])
def test_unpack_writes_nothing(hostile: Path, tmp_path: Path, fmt: str) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "model.safetensors").write_bytes(b"old weights")
    r = runner.invoke(app, ["unpack", str(hostile), "-o", str(out), "--force", "-q",
                            "--format", fmt])
    assert r.exit_code == 3, r.output
    assert "Traceback" not in r.output
    assert sorted(p.name for p in out.iterdir()) == ["model.safetensors"]
    assert (out / "model.safetensors").read_bytes() == b"old weights"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["h.llmc", "out"]


class _AttachmentsSource(Source):
    """A one-tensor source with the given attachments (what a repack source could hold)."""

    def __init__(self, attachments: list[tuple[str, bytes]]) -> None:
        super().__init__(Path("<test>"))
        self._attachments = attachments

    def tensors(self) -> Iterator[tuple[str, SourceTensor]]:
        yield "w", SourceTensor("w", "float32", (2, 2), lambda: np.ones((2, 2), np.float32))

    def attachments(self) -> Iterator[tuple[str, bytes]]:
        return iter(self._attachments)

    def describe(self) -> dict[str, Any]:
        return {"format": "test"}


def test_calibration_temp_dir_refuses_escaping_attachment_names(tmp_path: Path) -> None:
    """``--calibration`` / ``repack --weighting auto`` write the attachments to a temporary
    directory through the one checked helper: ``../x`` cannot land beside it."""
    import tempfile

    from llmc_format.rd.calibration import SELF, sensitivities

    escape = f"llmc-escape-{uuid.uuid4().hex}"
    outside = Path(tempfile.gettempdir()) / escape
    src = _AttachmentsSource([("config.json", b'{"model_type": "llama"}'),
                              (f"../{escape}", b"escaped")])
    try:
        with pytest.raises(SourceError, match=r"'\.\.'"):
            sensitivities(src, SELF, sequences=1, seq_len=4)
        assert not outside.exists()
    finally:
        outside.unlink(missing_ok=True)
