"""``llmc pack`` killed with SIGKILL never leaves a partial archive at the destination.

The writer streams into ``.NAME.XXXXXXXX.partial`` and renames it over NAME only once index and
footer are written and fsynced, so after a kill at any point the destination holds the
previous file (or, if the kill came after the rename, the complete new one) — and
``llmc pack --resume`` then finishes the job with the bytes of an uninterrupted pack.
A synthetic ~200 MB bf16 model makes ``pack`` run for a few seconds; these tests start
the real command in a subprocess, so they are marked slow (the fast suite has the
in-process and SIGKILL resume tests of test_resume.py).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import save_file

import llmc_format
from llmc_format.container import journal as journal_file
from llmc_format.container.reader import Reader
from llmc_format.pipeline.pack import pack

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Hugging Face directory: 48 bf16 matrices of 1024x2048 (201 MB) and a config."""
    d = tmp_path_factory.mktemp("model")
    rng = np.random.default_rng(0)
    save_file({f"model.layers.{i}.mlp.weight": (rng.standard_normal((1024, 2048), np.float32)
                                                * 0.02).astype(ml_dtypes.bfloat16)
               for i in range(48)}, d / "model.safetensors")
    (d / "config.json").write_text(json.dumps({"model_type": "synthetic", "layers": 48}))
    return d


@pytest.fixture(scope="module")
def reference(model: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, int]:
    """The archive an uninterrupted pack writes, and where its tensor data ends."""
    path = pack(model, tmp_path_factory.mktemp("ref") / "out.llmc")
    with Reader(path) as r:
        tensors_end = max(b.end for t in r.index.tensors for b in t.blobs)
    return path.read_bytes(), tensors_end


def _llmc(*args: str) -> list[str]:
    return [sys.executable, "-c", "from llmc_format.cli import app; app()", *map(str, args)]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}


def _kill_when(cmd: list[str], ready: Callable[[], bool], timeout: float = 600) -> bool:
    """Run ``cmd``; SIGKILL it as soon as ``ready()``. True if it was killed (not done)."""
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + timeout
        while proc.poll() is None and not ready() and time.monotonic() < deadline:
            time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    return proc.returncode == -signal.SIGKILL


def _size(p: Path | None) -> int:
    try:
        return p.stat().st_size if p is not None else -1
    except FileNotFoundError:
        return -1


def _partial(dst: Path) -> Path | None:
    """The partial file of the pack writing ``dst`` (a unique name), if there is one."""
    found = journal_file.leftovers(dst)
    return found[0][0] if found else None


def _journal(dst: Path) -> Path | None:
    found = journal_file.leftovers(dst)
    return found[0][1] if found and found[0][1].exists() else None


@pytest.mark.parametrize("when", ["early", "middle", "during close"])
def test_sigkill_leaves_the_previous_file(when: str, model: Path, reference: tuple[bytes, int],
                                          tmp_path: Path) -> None:
    ref, tensors_end = reference
    dst = tmp_path / "out.llmc"
    previous = llmc_format.save_file({"old": np.arange(4, dtype=np.int32)}, dst).read_bytes()
    threshold = {"early": 1, "middle": tensors_end // 2, "during close": tensors_end}[when]
    killed = _kill_when(_llmc("pack", model, "-o", dst, "--force", "-q"),
                        lambda: _size(_partial(dst)) >= threshold)
    now = dst.read_bytes()
    assert now in (previous, ref), "the destination holds a partial archive"
    if when != "during close":  # the kill certainly came before the rename
        assert killed and now == previous
    assert llmc_format.verify(dst).ok


def test_cli_resume_after_sigkill_is_byte_identical(model: Path, reference: tuple[bytes, int],
                                                    tmp_path: Path) -> None:
    ref, tensors_end = reference
    dst = tmp_path / "out.llmc"
    killed = _kill_when(_llmc("pack", model, "-o", dst, "-q"),
                        lambda: _journal(dst) is not None
                        and _size(_partial(dst)) >= tensors_end * 2 // 3)
    partial, journal = _partial(dst), _journal(dst)
    assert killed and not dst.exists() and journal is not None and partial is not None
    done = subprocess.run(_llmc("pack", model, "-o", dst, "-q", "--resume"), env=_env(),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert dst.read_bytes() == ref
    assert not partial.exists() and not journal.exists()


def test_cli_resume_with_other_options_exits_3(model: Path, reference: tuple[bytes, int],
                                               tmp_path: Path) -> None:
    _, tensors_end = reference
    dst = tmp_path / "out.llmc"
    assert _kill_when(_llmc("pack", model, "-o", dst, "-q"),
                      lambda: _journal(dst) is not None
                      and _size(_partial(dst)) >= tensors_end // 2)
    journal = _journal(dst)
    assert journal is not None
    done = subprocess.run(_llmc("pack", model, "-o", dst, "-q", "--resume", "--meta", "k=1"),
                          env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 3
    assert "other options" in done.stderr and "Traceback" not in done.stderr
    assert not dst.exists() and journal.exists()
