"""``pack --resume``: an interrupted pack continues and ends byte-identical to a clean one.

The journal (``.NAME.XXXXXXXX.partial.journal``) is untrusted input: torn tails are dropped,
records whose blobs are no longer in the partial file end it, and records that check but
make no sense are refused like a bad index.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import save_file

from llmc_format.container import journal
from llmc_format.errors import FormatError, LlmcError
from llmc_format.io.memory import MemorySource
from llmc_format.pipeline.pack import pack, pack_source
from llmc_format.pipeline.policy import Policy

ROOT = Path(__file__).resolve().parents[2]


class Interrupt(Exception):
    """Stands for Ctrl-C / a crash after some tensors were written."""


def _tensors(n: int = 10, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {f"layer.{i}.weight": (rng.standard_normal((48, 40)) * 0.02).astype(np.float32)
            for i in range(n)}


def _stop_after(name: str) -> Callable[[str, str, int, int], None]:
    def progress(event: str, tensor: str, done: int, total: int) -> None:
        if tensor == name and event == "tensor":
            raise Interrupt
    return progress


def _interrupted(tensors: dict[str, np.ndarray], dst: Path, stop: str, **kw) -> None:
    with pytest.raises(Interrupt):
        pack_source(MemorySource(tensors), dst, progress=_stop_after(stop), journal_interval=0,
                    **kw)


def _partial(dst: Path) -> tuple[Path, Path]:
    """The one partial file (unique name) of packs to ``dst``, and its journal path."""
    found = journal.leftovers(dst)
    assert len(found) == 1, found
    return found[0]


def _journal_of(dst: Path) -> Path | None:
    found = journal.leftovers(dst)
    return found[0][1] if found else None


def test_interrupted_pack_resumes_byte_identical(tmp_path: Path) -> None:
    t = _tensors()
    clean = pack_source(MemorySource(t), tmp_path / "clean.llmc", jobs=2)
    dst = tmp_path / "r.llmc"
    _interrupted(t, dst, "layer.5.weight", jobs=2)
    part, jnl = _partial(dst)
    assert part.exists() and jnl.exists() and not dst.exists()
    events: list[tuple[str, str]] = []
    pack_source(MemorySource(t), dst, jobs=1, resume=True,
                progress=lambda ev, name, d, tot: events.append((ev, name)))
    assert [n for ev, n in events if ev == "resumed"] == [f"layer.{i}.weight" for i in range(6)]
    assert [n for ev, n in events if ev == "tensor"] == [f"layer.{i}.weight" for i in range(6, 10)]
    assert dst.read_bytes() == Path(clean).read_bytes()
    assert not part.exists() and not jnl.exists()


def test_resume_of_lossy_vvc_pack(tmp_path: Path) -> None:
    t = _tensors(4, seed=1)
    policy = Policy(codec="vvc", min_lossy_numel=1)
    try:
        clean = pack_source(MemorySource(t), tmp_path / "clean.llmc", policy=policy, jobs=1)
    except LlmcError:
        pytest.skip("no VVC encoder")
    dst = tmp_path / "r.llmc"
    _interrupted(t, dst, "layer.1.weight", policy=policy, jobs=2)
    pack_source(MemorySource(t), dst, policy=policy, jobs=2, resume=True)
    assert dst.read_bytes() == Path(clean).read_bytes()


def test_resume_with_other_options_or_data_is_refused(tmp_path: Path) -> None:
    t = _tensors()
    dst = tmp_path / "r.llmc"
    _interrupted(t, dst, "layer.3.weight")
    part, jnl = _partial(dst)
    before = part.read_bytes(), jnl.read_bytes()
    with pytest.raises(journal.ResumeMismatchError, match="other options"):
        pack_source(MemorySource(t), dst, resume=True, alignment=128)
    with pytest.raises(journal.ResumeMismatchError, match="other options"):
        pack_source(MemorySource(t), dst, resume=True, policy=Policy(min_lossy_numel=5))
    with pytest.raises(journal.ResumeMismatchError):
        pack_source(MemorySource(t), dst, resume=True, user_metadata={"k": 1})
    assert (part.read_bytes(), jnl.read_bytes()) == before  # a refusal changes nothing
    edited = dict(t)
    edited["layer.1.weight"] = t["layer.1.weight"] + 1  # same names, shapes and sizes
    with pytest.raises(LlmcError, match="changed in the source"):
        pack_source(MemorySource(edited), dst, resume=True)


def test_resume_without_anything_to_resume_packs_from_scratch(tmp_path: Path) -> None:
    t = _tensors(3)
    clean = pack_source(MemorySource(t), tmp_path / "clean.llmc")
    dst = pack_source(MemorySource(t), tmp_path / "r.llmc", resume=True)
    assert Path(dst).read_bytes() == Path(clean).read_bytes()


def test_torn_journal_tail_resumes_from_the_previous_record(tmp_path: Path) -> None:
    t = _tensors()
    clean = pack_source(MemorySource(t), tmp_path / "clean.llmc")
    dst = tmp_path / "r.llmc"
    _interrupted(t, dst, "layer.6.weight")
    _, jnl = _partial(dst)
    data = jnl.read_bytes()
    jnl.write_bytes(data[:-7])  # killed in the middle of appending a record
    events: list[str] = []
    pack_source(MemorySource(t), dst, resume=True,
                progress=lambda ev, name, d, tot: events.append(ev))
    assert 0 < events.count("resumed") < 7
    assert dst.read_bytes() == Path(clean).read_bytes()


def test_damaged_partial_file_resumes_before_the_damage(tmp_path: Path) -> None:
    t = _tensors()
    clean = pack_source(MemorySource(t), tmp_path / "clean.llmc")
    dst = tmp_path / "r.llmc"
    _interrupted(t, dst, "layer.6.weight")
    part, _ = _partial(dst)
    data = bytearray(part.read_bytes())
    data[len(data) * 3 // 4] ^= 0x10  # inside the blobs of a late tensor
    part.write_bytes(bytes(data))
    events: list[str] = []
    pack_source(MemorySource(t), dst, resume=True,
                progress=lambda ev, name, d, tot: events.append(ev))
    assert 0 < events.count("resumed") < 7
    assert dst.read_bytes() == Path(clean).read_bytes()


def _append_record(jnl: Path, obj: dict) -> None:
    with open(jnl, "ab") as f:
        f.write(journal._encode(obj))


@pytest.mark.parametrize(
    ("record", "match"),
    [
        ({"tensors": "x", "position": 64}, "tensors"),
        ({"tensors": [], "position": 3}, "position"),
        ({"tensors": [], "position": -1}, "position"),
        ({"tensors": [{"name": "a", "dtype": "float32", "shape": [2**40, 2**40],
                       "pipeline": [{"id": "exact"}], "blobs": []}], "position": "END"},
         "2\\*\\*62"),
        ({"tensors": [{"name": "b", "dtype": "nope", "shape": [1],
                       "pipeline": [{"id": "exact"}], "blobs": []}], "position": "END"},
         "dtype"),
        ({"tensors": [{"name": "c", "dtype": "uint8", "shape": [1],
                       "pipeline": [{"id": "exact"}], "digest": {"source": 0, "decoded": 0},
                       "blobs": [{"stage": 0, "offset": 64, "length": 1, "checksum": 0}]}],
          "position": "END"}, "overlaps"),
        ({"tensors": [{"name": "layer.0.weight", "dtype": "uint8", "shape": [0],
                       "pipeline": [{"id": "exact"}], "blobs": [],
                       "digest": {"source": 0, "decoded": 0}}], "position": "END"},
         "repeated"),
        ({"tensors": [{"name": "d", "dtype": "uint8", "shape": [0], "alias_of": "x"}],
          "position": "END"}, "alias"),
    ],
)
def test_nonsense_journal_records_are_refused(tmp_path: Path, record: dict, match: str) -> None:
    t = _tensors(4)
    dst = tmp_path / "r.llmc"
    _interrupted(t, dst, "layer.1.weight")
    part, jnl = _partial(dst)
    if record["position"] == "END":
        record = {**record, "position": part.stat().st_size}
    _append_record(jnl, record)
    with pytest.raises(FormatError, match=match):
        pack_source(MemorySource(t), dst, resume=True)


def test_a_file_that_is_not_a_journal_is_refused(tmp_path: Path) -> None:
    t = _tensors(4)
    dst = tmp_path / "r.llmc"
    _interrupted(t, dst, "layer.1.weight")
    _, jnl = _partial(dst)
    jnl.write_bytes(b"not a journal at all")
    with pytest.raises(FormatError, match="not an llmc pack journal"):
        pack_source(MemorySource(t), dst, resume=True)


def test_plain_pack_ignores_and_replaces_a_stale_journal(tmp_path: Path) -> None:
    t = _tensors(4)
    dst = tmp_path / "r.llmc"
    _interrupted(t, dst, "layer.1.weight")
    part, jnl = _partial(dst)
    clean = pack_source(MemorySource(t), tmp_path / "clean.llmc")
    pack_source(MemorySource(t), dst)  # no --resume: starts over
    assert dst.read_bytes() == Path(clean).read_bytes()
    assert not part.exists() and not jnl.exists()


_KILLED_PACK = textwrap.dedent("""
    import sys, time
    from llmc_format.io import open_source
    from llmc_format.pipeline.pack import pack_source
    with open_source(sys.argv[1]) as src:  # slowed down so the kill lands mid-pack
        pack_source(src, sys.argv[2], jobs=2, journal_interval=0,
                    progress=lambda *a: time.sleep(0.05))
""")


def _records(jnl: Path | None) -> int:
    try:
        return len(journal._records(jnl.read_bytes())) if jnl is not None else 0
    except FileNotFoundError:
        return 0


def test_sigkill_mid_pack_then_resume_is_byte_identical(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    src = tmp_path / "model.safetensors"
    save_file({f"l.{i}": (rng.standard_normal((512, 512), dtype=np.float32) * 0.02
                          ).astype(ml_dtypes.bfloat16) for i in range(24)}, src)
    clean = pack(src, tmp_path / "clean.llmc")
    dst = tmp_path / "out.llmc"
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_PACK, str(src), str(dst)], env=env)
    try:
        deadline = time.monotonic() + 300
        while _records(_journal_of(dst)) < 6 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the pack finished before it could be killed"
    part, jnl = _partial(dst)
    assert not dst.exists() and part.exists()
    events: list[str] = []
    pack(src, dst, resume=True, progress=lambda ev, name, d, tot: events.append(ev))
    assert events.count("resumed") >= 5  # (6 records = start + 5 tensors): not encoded again
    assert dst.read_bytes() == Path(clean).read_bytes()
    assert not part.exists() and not jnl.exists()
