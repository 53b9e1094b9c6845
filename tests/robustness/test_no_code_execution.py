"""Hostile inputs cannot run code or write outside the output directory.

Torch checkpoints are pickles: ``llmc pack`` loads them with ``weights_only=True`` and a
pickle that would run code is refused (exit 3) before anything runs. Attachment names
come from the archive: ``llmc unpack`` refuses names that climb out of or bypass the
output directory, even when the index holding them has valid checksums.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import llmc_format
from llmc_format.cli import app
from llmc_format.container.writer import Writer
from llmc_format.errors import FormatError
from llmc_format.pipeline.pack import encode_one, write_packed

runner = CliRunner()


class _Evil:
    """Unpickling this creates a directory: the proof that code ran."""

    marker = ""

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.mkdir, (self.marker,))


def _evil(marker: Path) -> _Evil:
    e = _Evil()
    e.marker = str(marker)
    return e


@pytest.mark.parametrize("kind", ["zip", "legacy-pickle", "hf-dir"])
def test_pack_of_a_malicious_pickle_exits_3_without_running_it(tmp_path: Path, kind: str) -> None:
    marker = tmp_path / "pwned"
    payload = {"w": torch.zeros(2), "x": _evil(marker)}
    src = tmp_path / "evil.bin"
    if kind == "legacy-pickle":
        with src.open("wb") as f:
            pickle.dump(payload, f, protocol=2)
    elif kind == "zip":
        torch.save(payload, src)
    else:
        src = tmp_path / "model"
        src.mkdir()
        torch.save(payload, src / "pytorch_model.bin")
    proof = tmp_path / "proof"  # the payload is live: plain unpickling runs it
    pickle.loads(pickle.dumps(_evil(proof)))
    assert proof.is_dir()
    out = tmp_path / "out.llmc"
    r = runner.invoke(app, ["pack", str(src), "-o", str(out), "-q"])
    assert r.exit_code == 3, r.output
    assert "weights_only" in r.output
    assert not marker.exists()
    assert not out.exists() and not list(tmp_path.glob(".out.llmc*"))


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.mark.parametrize("name", ["../evil", "../../evil", "a/../../evil", "/ABS/evil",
                                  "sub/../../evil", "./../evil", "..", "a//b", "a\\..\\evil"])
def test_unpack_refuses_attachment_names_that_escape(
        name: str, tmp_path: Path,
        rewrite_index: Callable[[Path, Callable[[dict[str, Any]], None]], None]) -> None:
    work = tmp_path / "work"
    work.mkdir()
    abs_target = tmp_path / "abs_evil"
    name = name.replace("/ABS/evil", str(abs_target))
    with_attachment = work / "b.llmc"
    with Writer(with_attachment) as w:
        write_packed(w, encode_one("w", np.ones((2, 2), np.float32), [{"id": "exact"}]))
        w.add_attachment("config.json", b'{"evil": true}')
    rewrite_index(with_attachment, lambda o: o["attachments"][0].update(name=name))
    with pytest.raises(FormatError, match="attachment name"):  # refused at open (§5.5)
        llmc_format.safe_open(with_attachment)
    before = _tree(tmp_path)
    out = work / "out"
    r = runner.invoke(app, ["unpack", str(with_attachment), "-o", str(out), "-q"])
    assert r.exit_code == 3, r.output
    assert "Traceback" not in r.output
    created = _tree(tmp_path) - before
    assert all(p.startswith("work/out") for p in created), created
    assert not abs_target.exists() and not (tmp_path / "evil").exists()
    assert not (work / "evil").exists()
