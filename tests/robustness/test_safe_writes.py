"""Writes are private and atomic: no shared temp names, no following planted symlinks, no
replacing the source or a special file, one writer per output, disk full is exit 3.

Each test plants what a hostile (or merely unlucky) environment would: a symlink at the
temporary name the writer used to use, a second pack racing the first, a FIFO as output.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import save_file
from typer.testing import CliRunner

import llmc_format
from llmc_format.cli import app
from llmc_format.container.writer import Writer
from llmc_format.errors import OutputError
from llmc_format.io.memory import MemorySource
from llmc_format.pipeline.pack import encode_one, pack_source, write_packed

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


def _model(tmp_path: Path, name: str = "model.safetensors") -> Path:
    src = tmp_path / name
    rng = np.random.default_rng(0)
    save_file({"a": rng.standard_normal((64, 32)).astype(np.float32),
               "b": rng.standard_normal((16,)).astype(np.float32)}, src)
    return src


def _hidden(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir() if p.name.startswith("."))


def test_symlinks_planted_at_the_old_temp_names_are_not_followed(tmp_path: Path) -> None:
    src = _model(tmp_path)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    out = tmp_path / "out.llmc"
    for name in (".out.llmc.partial", ".out.llmc.partial.journal"):
        (tmp_path / name).symlink_to(victim)
    r = runner.invoke(app, ["pack", str(src), "-o", str(out), "-q"])
    assert r.exit_code == 0, r.output
    assert victim.read_text() == "precious"
    assert llmc_format.verify(out).ok
    assert (tmp_path / ".out.llmc.partial").is_symlink()  # not ours: left alone


def test_a_symlink_at_the_lock_name_is_refused_not_followed(tmp_path: Path) -> None:
    src = _model(tmp_path)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (tmp_path / ".out.llmc.lock").symlink_to(victim)
    r = runner.invoke(app, ["pack", str(src), "-o", str(tmp_path / "out.llmc"), "-q"])
    assert r.exit_code == 3, r.output
    assert victim.read_text() == "precious"
    assert not (tmp_path / "out.llmc").exists()


def test_two_writers_of_one_output_cannot_both_succeed(tmp_path: Path) -> None:
    out = tmp_path / "out.llmc"
    llmc_format.save_file({"old": np.arange(3, dtype=np.int32)}, out)
    old = out.read_bytes()
    t = {"w": np.ones((8, 8), np.float32)}
    with Writer(out) as first:  # a pack in progress
        write_packed(first, encode_one("x", np.zeros(4, np.float32), [{"id": "exact"}]))
        with pytest.raises(OutputError, match="another llmc process"):
            pack_source(MemorySource(t), out)
        r = runner.invoke(app, ["pack", str(_model(tmp_path)), "-o", str(out), "-q", "--force"])
        assert r.exit_code == 3 and "another llmc process" in r.output
        assert out.read_bytes() == old  # the second writer changed nothing
    assert llmc_format.load_file(out).keys() == {"x"}  # the first one finished intact
    assert _hidden(tmp_path) == []  # lock file and temp files gone
    pack_source(MemorySource(t), out)  # and the output is free again
    assert llmc_format.load_file(out).keys() == {"w"}


def test_writer_temp_files_have_unique_exclusive_names(tmp_path: Path) -> None:
    out = tmp_path / "out.llmc"
    w = Writer(out)
    try:
        tmp = w.tmp_path
        assert tmp.parent == tmp_path and tmp.name.startswith(".out.llmc.")
        assert tmp.name != ".out.llmc.partial"
        assert (tmp.stat().st_mode & 0o777) == 0o600  # private until published
    finally:
        w.abort()
    assert _hidden(tmp_path) == []


@pytest.mark.parametrize("force", [False, True])
def test_output_equal_to_or_inside_the_source_is_refused(tmp_path: Path, force: bool) -> None:
    src = _model(tmp_path)
    before = src.read_bytes()
    flag = ["--force"] if force else []
    r = runner.invoke(app, ["pack", str(src), "-o", str(src), "-q", *flag])
    assert r.exit_code == 3, r.output
    assert src.read_bytes() == before
    model_dir = tmp_path / "dir"
    model_dir.mkdir()
    shutil.copy(src, model_dir / "model.safetensors")
    (model_dir / "config.json").write_text("{}")
    inside = model_dir / "sub" / ".." / "out.llmc"
    (model_dir / "sub").mkdir()
    r = runner.invoke(app, ["pack", str(model_dir), "-o", str(inside), "-q", *flag])
    assert r.exit_code == 3 and "inside the source" in r.output, r.output
    assert sorted(p.name for p in model_dir.iterdir()) == ["config.json", "model.safetensors",
                                                           "sub"]
    link = tmp_path / "hard.safetensors"
    os.link(src, link)  # another name of the same file
    r = runner.invoke(app, ["pack", str(src), "-o", str(link), "-q", "--force"])
    assert r.exit_code == 3 and src.read_bytes() == before


def test_repack_onto_its_own_input_is_refused(tmp_path: Path) -> None:
    from llmc_format.pipeline.policy import Policy

    archive = tmp_path / "a.llmc"
    w = np.random.default_rng(0).standard_normal((128, 256)).astype(np.float32)
    try:
        pack_source(MemorySource({"w": w}), archive,
                    policy=Policy(codec="hevc", qp=30, min_lossy_numel=1))
    except llmc_format.LlmcError:
        pytest.skip("no HEVC encoder")
    before = archive.read_bytes()
    r = runner.invoke(app, ["repack", str(archive), "-o", str(archive), "--bpw", "4", "-q",
                            "--force"])
    assert r.exit_code == 3, r.output
    assert archive.read_bytes() == before


@pytest.mark.parametrize("kind", ["fifo", "symlink", "dangling-symlink", "directory"])
def test_special_files_as_output_are_refused_even_with_force(tmp_path: Path, kind: str) -> None:
    src = _model(tmp_path)
    out = tmp_path / "out.llmc"
    target = tmp_path / "target.llmc"
    if kind == "fifo":
        os.mkfifo(out)
    elif kind == "symlink":
        target.write_bytes(b"keep")
        out.symlink_to(target)
    elif kind == "dangling-symlink":
        out.symlink_to(target)
    else:
        out.mkdir()
    r = runner.invoke(app, ["pack", str(src), "-o", str(out), "-q", "--force"])
    assert r.exit_code == 3, r.output
    assert "Traceback" not in r.output
    if kind == "fifo":
        assert out.is_fifo()
    elif kind.endswith("symlink"):
        assert out.is_symlink()
        assert target.read_bytes() == b"keep" if kind == "symlink" else not target.exists()
    else:
        assert out.is_dir()
    assert _hidden(tmp_path) == []


def test_failed_pack_leaves_no_temp_files(tmp_path: Path) -> None:
    out = tmp_path / "out.llmc"
    llmc_format.save_file({"old": np.arange(3, dtype=np.int32)}, out)
    old = out.read_bytes()
    bad = {"a": np.ones((4, 4), np.float32), "b": np.array(["not", "numbers"], dtype=object)}
    with pytest.raises(llmc_format.LlmcError):
        pack_source(MemorySource(bad), out)
    assert out.read_bytes() == old
    assert _hidden(tmp_path) == []


_DISK_FULL = textwrap.dedent("""
    import json, os, subprocess, sys
    from pathlib import Path
    mnt, src, what = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "none", str(mnt)], check=True)
    from typer.testing import CliRunner
    import llmc_format
    from llmc_format.cli import app
    import numpy as np
    if what == "pack":
        out = mnt / "out.llmc"
        llmc_format.save_file({"old": np.arange(3, dtype=np.int32)}, out)
        args = ["pack", src, "-o", str(out), "-q", "--force"]
    else:
        out = mnt / "restored"
        out.mkdir()
        (out / "model.safetensors").write_bytes(b"old weights")
        args = ["unpack", src, "-o", str(out), "-q", "--force"]
    r = CliRunner().invoke(app, args)
    listing = {p: sorted(os.listdir(mnt / p)) if (mnt / p).is_dir() else None
               for p in os.listdir(mnt)}
    print(json.dumps({"exit": r.exit_code, "output": r.output, "after": listing,
                      "kept": (llmc_format.load_file(out).keys() == {"old"}) if what == "pack"
                      else (out / "model.safetensors").read_bytes() == b"old weights"}))
""")


def _in_small_tmpfs(tmp_path: Path, src: Path, what: str) -> dict:
    if shutil.which("unshare") is None or shutil.which("mount") is None:
        pytest.skip("needs unshare and mount (user namespaces)")
    probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("user namespaces are not available here")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    done = subprocess.run(["unshare", "-rm", sys.executable, "-c", _DISK_FULL, str(mnt),
                           str(src), what], capture_output=True, text=True, env=env,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_disk_full_during_pack_is_exit_3_naming_the_path(tmp_path: Path) -> None:
    src = tmp_path / "big.safetensors"
    rng = np.random.default_rng(1)
    save_file({"w": rng.standard_normal((512, 1024)).astype(np.float32)}, src)  # 2 MiB
    got = _in_small_tmpfs(tmp_path, src, "pack")
    assert got["exit"] == 3, got["output"]
    assert "no space left" in got["output"] and "out.llmc" in got["output"]
    assert "Traceback" not in got["output"]
    assert got["kept"]  # the previous archive is intact
    assert set(got["after"]) == {"out.llmc"}  # no temp file, no lock file


def test_disk_full_during_unpack_keeps_the_old_directory(tmp_path: Path) -> None:
    archive = tmp_path / "big.llmc"
    rng = np.random.default_rng(1)
    llmc_format.save_file({"w": rng.standard_normal((512, 1024)).astype(np.float32)}, archive)
    got = _in_small_tmpfs(tmp_path, archive, "unpack")
    assert got["exit"] == 3, got["output"]
    assert "no space left" in got["output"] and "restored" in got["output"]
    assert "Traceback" not in got["output"]
    assert got["kept"]  # the old weights are still there
    assert got["after"] == {"restored": ["model.safetensors"]}  # no staging dir, no lock


@pytest.mark.parametrize("kind", ["symlink", "fifo"])
def test_extract_never_writes_through_a_symlink_or_into_a_fifo(tmp_path: Path, kind: str) -> None:
    archive = tmp_path / "a.llmc"
    llmc_format.save_file({"w": np.ones((4, 4), np.float32)}, archive)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    out = tmp_path / "w.npy"
    if kind == "symlink":
        out.symlink_to(victim)
    else:
        os.mkfifo(out)
    r = runner.invoke(app, ["extract", str(archive), "w", "-o", str(out), "--force"])
    assert r.exit_code == 3, r.output
    assert victim.read_text() == "precious"
    assert out.is_symlink() if kind == "symlink" else out.is_fifo()
    assert _hidden(tmp_path) == []


def test_a_new_output_made_by_someone_else_meanwhile_is_not_replaced(tmp_path: Path) -> None:
    """Two packs to one new name, one after the other, each past its own 'does it exist'
    check before the other finished: the second must not silently replace the first.
    The writer rechecks under its lock, at its start and before the final rename."""
    out = tmp_path / "out.llmc"
    t = {"w": np.ones((8, 8), np.float32)}
    llmc_format.save_file({"theirs": np.arange(3, dtype=np.int32)}, out)  # finished first
    with pytest.raises(OutputError, match="created by another process"):
        pack_source(MemorySource(t), out, new=True)  # refused at the writer's start
    assert llmc_format.load_file(out).keys() == {"theirs"}
    out.unlink()

    def appears(event: str, name: str, done: int, total: int) -> None:
        if event == "tensor" and not out.exists():  # mid-pack, by a process that takes
            out.write_bytes(b"not ours")             # no lock (llmc's own ones fail at it)

    with pytest.raises(OutputError, match="created by another process"):
        pack_source(MemorySource(t), out, progress=appears)  # new: absent at the start
    assert out.read_bytes() == b"not ours"
    leftovers = [n for n in _hidden(tmp_path) if not n.endswith((".partial", ".journal"))]
    assert leftovers == []  # no temp or lock file (a resumable partial may stay)
    pack_source(MemorySource(t), out, new=False)  # --force: replacing is what was asked
    assert llmc_format.load_file(out).keys() == {"w"}


def test_run_pack_treats_an_absent_output_as_new(tmp_path: Path) -> None:
    """What ``llmc pack`` and ``llmc_format.pack`` run: an output absent when the pack began
    is refused if it appears before the rename (both plain and target packs)."""
    from llmc_format.pipeline.options import PackOptions, run_pack

    out = tmp_path / "out.llmc"

    def appears(event: str, name: str, done: int, total: int) -> None:
        if event == "tensor" and not out.exists():
            out.write_bytes(b"someone else's file")

    with pytest.raises(OutputError, match="created by another process"):
        run_pack(PackOptions(), MemorySource({"w": np.ones((8, 8), np.float32)}), out,
                 progress=appears)
    assert out.read_bytes() == b"someone else's file"


def test_metadata_update_takes_the_output_lock(tmp_path: Path) -> None:
    from llmc_format.container.writer import append_metadata_update

    out = tmp_path / "out.llmc"
    llmc_format.save_file({"a": np.arange(3, dtype=np.int32)}, out)
    before = out.read_bytes()
    with Writer(out):  # a pack of out in progress
        with pytest.raises(OutputError, match="another llmc process"):
            append_metadata_update(out, metadata={"user": {"k": 1}})
        assert out.read_bytes() == before  # nothing appended under the writer's feet
    append_metadata_update(out, metadata={"user": {"k": 1}})
    assert llmc_format.safe_open(out).__enter__().metadata()["user"] == {"k": 1}
    assert _hidden(tmp_path) == []


def test_names_the_writer_refuses_are_refused_before_anything_is_written(tmp_path: Path) -> None:
    """A ``__metadata__`` tensor (or an unsafe attachment name) used to be refused by the
    writer after every tensor before it was encoded and written (and journaled: a
    resumable partial stayed behind). Now before the writer starts."""
    from llmc_format.errors import FormatError

    out = tmp_path / "out.llmc"
    rng = np.random.default_rng(0)
    t = {"a": rng.standard_normal((64, 64)).astype(np.float32),
         "__metadata__": np.zeros(2, np.float32)}
    seen: list[str] = []
    with pytest.raises(FormatError, match="reserved"):
        pack_source(MemorySource(t), out, progress=lambda ev, n, d, tot: seen.append(ev),
                    journal_interval=0)
    assert "tensor" not in seen and not out.exists()
    assert _hidden(tmp_path) == []  # no partial file, journal or lock
    class WithAttachment(MemorySource):
        def attachments(self):  # type: ignore[no-untyped-def]
            yield "../config.json", b"{}"

    bad = WithAttachment({"a": t["a"]})
    with pytest.raises(FormatError, match="component"):
        pack_source(bad, out)
    assert _hidden(tmp_path) == [] and not out.exists()


@pytest.fixture
def umask_027() -> Any:
    """A umask that neither 0600 nor 0644 satisfies, restored afterwards."""
    old = os.umask(0o027)
    yield 0o640
    os.umask(old)


def test_published_outputs_get_the_umask_mode_not_the_temp_files_0600(
        tmp_path: Path, umask_027: int) -> None:
    # found by hand: `llmc pack` left model.llmc at 0600 (the temp file's private mode), so
    # another user or a web server could not read the archive an ordinary cp makes 0644
    src = _model(tmp_path)
    outs = {"pack": tmp_path / "p.llmc", "size": tmp_path / "s.llmc",
            "save_file": tmp_path / "f.llmc", "extract": tmp_path / "a.npy"}
    r = runner.invoke(app, ["pack", str(src), "-o", str(outs["pack"]), "-q"])
    assert r.exit_code == 0, r.output
    # a target the source meets exact: the exact pack is published from a private directory
    r = runner.invoke(app, ["pack", str(src), "-o", str(outs["size"]), "-q", "--codec", "vvc",
                            "--size", "1MB", "--lossy", "a", "--min-lossy-numel", "1"])
    assert r.exit_code == 0, r.output
    llmc_format.save_file({"w": np.ones((4, 4), np.float32)}, outs["save_file"])
    r = runner.invoke(app, ["extract", str(outs["pack"]), "a", "-o", str(outs["extract"])])
    assert r.exit_code == 0, r.output
    modes = {k: oct(p.stat().st_mode & 0o777) for k, p in outs.items()}
    assert modes == dict.fromkeys(outs, oct(umask_027))
