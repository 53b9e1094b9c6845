"""Every input gets bounded work: alias fan-out, index object counts, nesting, special files.

Each case here was unbounded before (issue 17): 20,000 aliases of one compressible tensor
made a 35 KB file unpack to 2.1 GB and ``verify`` run for minutes; an index of 50 M empty
msgpack maps took 3.6 GB to open; a FIFO given as the archive blocked forever.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import llmc_format
from fuzz.harness import ArchiveModel
from llmc_format.container.reader import Reader
from llmc_format.errors import InputError, LimitError
from llmc_format.pipeline.inspect import describe
from llmc_format.pipeline.unpack import unpack
from llmc_format.pipeline.verify import verify

Forge = Callable[[Path, Callable[[ArchiveModel], None], Path], Path]


@pytest.fixture
def zeros_archive(tmp_path: Path) -> Path:
    """One 256 KiB tensor of zeros: ~100 stored bytes (a 2600x expansion, within 2^15)."""
    p = tmp_path / "zeros.llmc"
    llmc_format.save_file({"w": np.zeros((256, 256), np.float32),
                           "b": np.ones(4, np.float32)}, p, jobs=1)
    return p


def _add_aliases(n: int) -> Callable[[ArchiveModel], None]:
    def lie(m: ArchiveModel) -> None:
        m.obj["tensors"] += [{"name": f"a{i}", "dtype": "float32", "shape": [256, 256],
                              "alias_of": "w"} for i in range(n)]
    return lie


def test_aliases_count_toward_the_expansion_limit(zeros_archive: Path, forge: Forge,
                                                  tmp_path: Path) -> None:
    bomb = forge(zeros_archive, _add_aliases(2000), tmp_path / "bomb.llmc")
    # every way of reading it refuses the fan-out before decoding (or writing) it
    with pytest.raises(LimitError, match="2000 aliases"):
        llmc_format.load_file(bomb)
    out = tmp_path / "out"
    with pytest.raises(LimitError, match="aliases"):
        unpack(bomb, out, tied="copy")
    assert not any(out.glob("*.safetensors"))
    with llmc_format.safe_open(bomb) as f, pytest.raises(LimitError):
        f.get_tensor("a7")


def test_verify_decodes_each_alias_target_once(zeros_archive: Path, forge: Forge,
                                               tmp_path: Path) -> None:
    """A few aliases within the limit: verify is OK, and its time does not grow with
    one decode per alias (each alias's check is its target's)."""
    fan = forge(zeros_archive, _add_aliases(3000), tmp_path / "fan.llmc")
    t0 = time.perf_counter()
    report = verify(fan)
    seconds = time.perf_counter() - t0
    assert not report.ok and len(report.tensors) == 3002
    assert all("aliases" in (t.problem or "") for t in report.tensors if t.name != "b")
    assert seconds < 5, seconds

    few = forge(zeros_archive, _add_aliases(3), tmp_path / "few.llmc")
    assert verify(few).ok
    loaded = llmc_format.load_file(few)
    assert loaded["a0"] is loaded["w"] and loaded["a2"] is loaded["w"]  # shared, decoded once


def test_index_of_many_empty_maps_is_refused_with_bounded_memory(zeros_archive: Path,
                                                                 forge: Forge,
                                                                 tmp_path: Path) -> None:
    def lie(m: ArchiveModel) -> None:
        m.obj["metadata"]["junk"] = [{}] * 4_000_000  # 4 MB of index, 290 MB as Python dicts

    bomb = forge(zeros_archive, lie, tmp_path / "maps.llmc")
    tracemalloc.start()
    try:
        with pytest.raises(LimitError, match="msgpack maps and arrays"):
            describe(bomb)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20, peak


def test_a_real_index_is_far_within_the_container_budget(zeros_archive: Path,
                                                         forge: Forge, tmp_path: Path) -> None:
    """A legit index with 20,000 small entries (~25 bytes per map or array) opens."""
    def lie(m: ArchiveModel) -> None:
        m.obj["metadata"]["table"] = [{"k": i, "v": [i, 2 * i]} for i in range(20_000)]

    ok = forge(zeros_archive, lie, tmp_path / "ok.llmc")
    assert len(describe(ok)["metadata"]["table"]) == 20_000


@pytest.mark.parametrize("where", ["metadata", "rd", "quant", "pipeline"])
def test_deep_nesting_is_refused_at_open(zeros_archive: Path, forge: Forge, tmp_path: Path,
                                         where: str) -> None:
    deep: list = []
    for _ in range(200):
        deep = [deep]

    def lie(m: ArchiveModel) -> None:
        t = m.obj["tensors"][0]
        if where == "metadata":
            m.obj["metadata"]["deep"] = deep
        elif where == "pipeline":
            t["pipeline"][0]["extra"] = deep
        else:
            t[where] = {"x": deep}

    p = forge(zeros_archive, lie, tmp_path / "deep.llmc")
    with pytest.raises(LimitError, match="nest deeper"):
        Reader(p)


def _open_in_child(path: Path) -> subprocess.CompletedProcess[str]:
    code = ("import sys\nfrom llmc_format.container.reader import Reader\n"
            "from llmc_format.errors import InputError\n"
            "try:\n    Reader(sys.argv[1])\nexcept InputError as e:\n    print('InputError:', e)\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    return subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True,
                          text=True, timeout=60, env=env)


def test_a_fifo_as_the_archive_is_refused_not_waited_on(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.llmc"
    os.mkfifo(fifo)
    try:
        done = _open_in_child(fifo)
    except subprocess.TimeoutExpired:  # the old behaviour: open() waits for a writer
        pytest.fail("opening a FIFO blocked")
    assert "InputError:" in done.stdout and "FIFO" in done.stdout, done.stderr


@pytest.mark.parametrize("kind", ["directory", "device", "socket"])
def test_special_files_are_refused_with_a_typed_error(tmp_path: Path, kind: str) -> None:
    path = {"directory": tmp_path, "device": Path(os.devnull), "socket": tmp_path / "s"}[kind]
    if kind == "socket":
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(path))
        sock.close()
    with pytest.raises(InputError, match=kind):
        Reader(path)
    report = verify(path)
    assert not report.ok and kind in report.file_problems[0]
