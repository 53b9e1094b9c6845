"""``unpack`` is atomic: a failure, a name clash or a kill leaves the old output as it was.

Everything is written into a private staging directory beside the output and moved into
place once complete; staging directories of killed runs are removed on the next run only
when provably ours (our naming and our marker file).
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import llmc_format
from llmc_format.cli import app
from llmc_format.container.reader import Reader
from llmc_format.container.writer import Writer
from llmc_format.errors import OutputError
from llmc_format.outfiles import OutputLock, umask
from llmc_format.pipeline.pack import encode_one, write_packed
from llmc_format.pipeline.unpack import STAGE_MARK, unpack

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


def _archive(path: Path, attachments: dict[str, bytes] | None = None) -> Path:
    rng = np.random.default_rng(0)
    with Writer(path) as w:
        for name in ("a", "b"):
            write_packed(w, encode_one(name, rng.standard_normal((32, 16)).astype(np.float32),
                                       [{"id": "exact"}]))
        for name, data in (attachments or {"config.json": b'{"model_type": "llama"}'}).items():
            w.add_attachment(name, data, compress=False)
    return path


def _old_output(out: Path) -> dict[str, bytes]:
    out.mkdir()
    (out / "model.safetensors").write_bytes(b"old weights")
    (out / "config.json").write_bytes(b"old config")
    (out / "notes.txt").write_bytes(b"mine")
    return _snapshot(out)


def _snapshot(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() if p.is_file() else b"<dir>"
            for p in sorted(d.rglob("*"))}


def _hidden(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir() if p.name.startswith("."))


def test_failure_after_the_weights_leaves_the_old_output(tmp_path: Path) -> None:
    """The attachment is corrupt: it is read after every weight was written."""
    archive = _archive(tmp_path / "a.llmc")
    with Reader(archive) as r:
        offset = next(iter(r.attachments())).blob.offset
    data = bytearray(archive.read_bytes())
    data[offset] ^= 0xFF
    archive.write_bytes(bytes(data))
    out = tmp_path / "out"
    before = _old_output(out)
    r = runner.invoke(app, ["unpack", str(archive), "-o", str(out), "--force", "-q"])
    assert r.exit_code == 3, r.output
    assert _snapshot(out) == before
    assert _hidden(tmp_path) == []


def test_a_directory_where_a_file_goes_is_refused_before_anything_moves(tmp_path: Path) -> None:
    archive = _archive(tmp_path / "a.llmc", {"config.json": b"{}", "tok/vocab.txt": b"x"})
    out = tmp_path / "out"
    out.mkdir()
    (out / "model.safetensors").write_bytes(b"old weights")
    (out / "config.json").mkdir()  # in the way of an attachment
    (out / "config.json" / "keep").write_bytes(b"k")
    (out / "tok").write_bytes(b"a file where a directory goes")
    before = _snapshot(out)
    r = runner.invoke(app, ["unpack", str(archive), "-o", str(out), "--force", "-q"])
    assert r.exit_code == 3 and "nothing was changed" in r.output, r.output
    assert "Traceback" not in r.output
    assert _snapshot(out) == before
    assert _hidden(tmp_path) == []


def test_force_into_a_non_empty_directory_replaces_by_manifest(tmp_path: Path) -> None:
    archive = _archive(tmp_path / "a.llmc")
    out = tmp_path / "out"
    _old_output(out)
    (out / "pytorch_model.bin").write_bytes(b"stale weights of another format")
    r = runner.invoke(app, ["unpack", str(archive), "-o", str(out), "--force", "-q"])
    assert r.exit_code == 0, r.output
    assert sorted(os.listdir(out)) == ["config.json", "model.safetensors", "notes.txt"]
    assert (out / "notes.txt").read_bytes() == b"mine"
    assert (out / "config.json").read_bytes() == b'{"model_type": "llama"}'
    assert llmc_format.load_file(archive).keys() == {"a", "b"}
    assert _hidden(tmp_path) == []


def test_a_fresh_output_is_renamed_into_place_with_normal_permissions(tmp_path: Path) -> None:
    archive = _archive(tmp_path / "a.llmc")
    for out in (tmp_path / "new", tmp_path / "empty"):
        if out.name == "empty":
            out.mkdir()
        result = unpack(archive, out)
        assert sorted(os.listdir(out)) == ["config.json", "model.safetensors"]
        assert result.files == ["model.safetensors"]
        assert stat.S_IMODE(out.stat().st_mode) == 0o777 & ~umask()
        for f in out.iterdir():
            assert stat.S_IMODE(f.stat().st_mode) == 0o666 & ~umask()
    assert _hidden(tmp_path) == []


def test_stale_staging_directories_are_removed_only_when_ours(tmp_path: Path) -> None:
    archive = _archive(tmp_path / "a.llmc")
    out = tmp_path / "out"
    ours = tmp_path / ".out.abcd1234.unpack"
    ours.mkdir()
    (ours / STAGE_MARK).touch()
    (ours / "model.safetensors").write_bytes(b"x" * 1000)
    lookalike = tmp_path / ".out.efgh5678.unpack"  # no marker: not provably ours
    lookalike.mkdir()
    (lookalike / "data").write_bytes(b"someone's")
    linked = tmp_path / ".out.ijkl9012.unpack"  # a symlink to a marked directory
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / STAGE_MARK).touch()
    linked.symlink_to(target)
    unpack(archive, out)
    assert not ours.exists()
    assert (lookalike / "data").read_bytes() == b"someone's"
    assert linked.is_symlink() and (target / STAGE_MARK).exists()


def test_a_second_unpack_to_the_same_output_fails_at_once(tmp_path: Path) -> None:
    archive = _archive(tmp_path / "a.llmc")
    out = tmp_path / "out"
    with OutputLock(out), pytest.raises(OutputError, match="another llmc process"):
        unpack(archive, out)
    assert not out.exists()
    unpack(archive, out)
    assert (out / "model.safetensors").exists()


@pytest.mark.parametrize("kind", ["file", "symlink", "fifo"])
def test_unpack_output_that_is_not_a_directory_is_refused(tmp_path: Path, kind: str) -> None:
    archive = _archive(tmp_path / "a.llmc")
    out = tmp_path / "out"
    real = tmp_path / "real"
    real.mkdir()
    if kind == "file":
        out.write_bytes(b"x")
    elif kind == "symlink":
        out.symlink_to(real)
    else:
        os.mkfifo(out)
    r = runner.invoke(app, ["unpack", str(archive), "-o", str(out), "--force", "-q"])
    assert r.exit_code == 3, r.output
    assert os.listdir(real) == []


_SLOW_UNPACK = """
import sys, time
from llmc_format.pipeline.unpack import unpack
unpack(sys.argv[1], sys.argv[2], jobs=1, progress=lambda *a: time.sleep(0.2))
"""


def test_sigkill_mid_unpack_leaves_the_old_output_and_is_cleaned_next_time(
        tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    archive = tmp_path / "a.llmc"
    llmc_format.save_file({f"t{i}": rng.standard_normal((256, 256)).astype(np.float32)
                           for i in range(12)}, archive)
    out = tmp_path / "out"
    before = _old_output(out)
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_UNPACK, str(archive), str(out)],
                            env=env)

    def staged_bytes() -> int:
        return sum(f.stat().st_size for d in tmp_path.glob(".out.*.unpack")
                   for f in d.iterdir() if f.is_file())
    try:
        deadline = time.monotonic() + 120
        while staged_bytes() < 1 << 20 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the unpack finished before it could be killed"
    assert _snapshot(out) == before
    assert list(tmp_path.glob(".out.*.unpack"))  # what the kill left behind...
    unpack(archive, out)  # ...is removed by the next run
    assert _hidden(tmp_path) == []
    got = llmc_format.load_file(archive)
    from safetensors.numpy import load_file

    restored = load_file(out / "model.safetensors")
    assert all(np.array_equal(restored[k], got[k]) for k in got)


def test_unpack_into_the_current_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = _archive(tmp_path / "a.llmc")
    work = tmp_path / "work"
    work.mkdir()
    (work / "keep.txt").write_bytes(b"k")
    monkeypatch.chdir(work)
    r = runner.invoke(app, ["unpack", str(archive), "-o", ".", "--force", "-q"])
    assert r.exit_code == 0, r.output
    assert sorted(os.listdir(work)) == ["config.json", "keep.txt", "model.safetensors"]
    assert _hidden(tmp_path) == []
