"""The outputs shown in docs/ are what the commands print (tools/make_docs.py --check)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _check(tmp_path: Path, only: str, docs: Path | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "tools.make_docs", "--check", "--only", only,
           "--work", str(tmp_path / "work")]
    if docs is not None:
        cmd += ["--docs", str(docs)]
    (tmp_path / "work").mkdir(exist_ok=True)
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_documented_outputs_match_and_drift_is_caught(tmp_path: Path, minilm_dir: Path) -> None:
    only = "pack-help,pack-bad-qp,inspect-not-archive"
    r = _check(tmp_path, only)
    assert r.returncode == 0, r.stderr
    docs = tmp_path / "docs"
    shutil.copytree(ROOT / "docs", docs)
    text = (docs / "pack.md").read_text()
    assert "[exit 2]" in text
    (docs / "pack.md").write_text(text.replace("error: --qp: qp must be", "error: qp must be"))
    r = _check(tmp_path, only, docs)
    assert r.returncode == 1 and "pack.md [pack-bad-qp] drifted" in r.stderr


@pytest.mark.slow
def test_every_fast_documented_run_matches(tmp_path: Path, minilm_dir: Path) -> None:
    r = _check(tmp_path, "fast")
    assert r.returncode == 0, r.stderr


GENERATED = ("pack.md", "inspect.md", "unpack.md")


def test_every_shown_run_of_the_command_pages_is_generated() -> None:
    """In the command pages, a console block is either a make_docs run (checked by
    ``--check``) or says why it is not (``<!-- hand: ... -->``: needs a FIFO, folded)."""
    sys.path.insert(0, str(ROOT))
    from tools.make_docs import RUNS, blocks

    for name in GENERATED:
        lines = (ROOT / "docs" / name).read_text().split("\n")
        for i, line in enumerate(lines):
            if line.startswith("```console"):
                before = lines[i - 1] if i else ""
                assert before.startswith(("<!-- make_docs: ", "<!-- hand: ")), \
                    f"docs/{name}:{i + 1}: a console block neither generated nor marked"
        marked = set(blocks("\n".join(lines)))
        assert marked == {k for k, r in RUNS.items() if r.doc == name}, name


@pytest.mark.slow
def test_every_documented_run_matches_smollm2_included(tmp_path: Path, minilm_dir: Path,
                                                      smollm_gguf: Path) -> None:
    """All runs, the SmolLM2 pack/inspect/unpack and the VVC ones too (minutes)."""
    r = _check(tmp_path, "all")
    assert r.returncode == 0, r.stderr
