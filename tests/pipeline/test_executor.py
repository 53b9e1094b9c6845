"""Executors: order, bounded window, errors; pack/unpack through them give the same bytes."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from llmc_format.cli import app
from llmc_format.container.reader import Reader
from llmc_format.errors import CodecError, LlmcError
from llmc_format.io.memory import MemorySource
from llmc_format.pipeline.executor import LocalExecutor, Ready, make_executor
from llmc_format.pipeline.pack import TIMING_KEYS, pack_source, with_encoder_threads
from llmc_format.pipeline.policy import Policy
from llmc_format.pipeline.unpack import iter_tensors
from llmc_format.runtime import default_jobs

#: a small lossy tensor (64x64 >= min_lossy_numel) next to exact ones of several dtypes
VVC_POLICY = Policy(codec="vvc", qp=37, min_lossy_numel=1024)


def model() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    return {
        "emb": rng.standard_normal((96, 40)).astype(ml_dtypes.bfloat16),
        "proj": (0.05 * rng.standard_normal((64, 64))).astype(np.float32),
        "norm": np.ones(40, np.float16),
        "step": np.array(3, np.int64),
    }


def _slow_square(x: int) -> int:
    time.sleep(0.002 * (10 - x))  # later items finish first: order must still hold
    return x * x


def test_map_ordered_keeps_order_whatever_finishes_first() -> None:
    with LocalExecutor(3) as ex:
        assert list(ex.map_ordered(_slow_square, range(10))) == [x * x for x in range(10)]


@pytest.mark.parametrize("window", [1, 2, 4])
def test_map_ordered_draws_at_most_window_items_ahead(window: int) -> None:
    drawn, yielded, worst = 0, 0, 0
    lock = threading.Lock()

    def items() -> Iterator[int]:
        nonlocal drawn, worst
        for i in range(12):
            with lock:
                drawn += 1
                worst = max(worst, drawn - yielded)
            yield i

    with LocalExecutor(2) as ex:
        for got in ex.map_ordered(lambda x: x + 1, items(), window):
            yielded += 1
            assert got == yielded
    assert worst == window


@settings(max_examples=40, deadline=None)
@given(costs=st.lists(st.integers(0, 50), max_size=30), budget=st.integers(1, 80),
       window=st.integers(1, 10))
def test_budget_bounds_the_cost_drawn_ahead(costs: list[int], budget: int, window: int) -> None:
    """Drawn-not-yielded items never cost more than the budget plus the last one drawn,
    never number more than the window, and come back in order."""
    drawn: list[int] = []
    yielded = 0
    worst_cost = worst_count = 0

    def items() -> Iterator[int]:
        nonlocal worst_cost, worst_count
        for i in range(len(costs)):
            drawn.append(i)
            ahead = drawn[yielded:]
            worst_count = max(worst_count, len(ahead))
            # what was in flight before this item, plus this one
            worst_cost = max(worst_cost, sum(costs[k] for k in ahead[:-1]) - budget + 1)
            yield i

    with LocalExecutor(2) as ex:
        for got in ex.map_ordered(lambda x: x, items(), window, cost=costs.__getitem__,
                                  budget=budget):
            assert got == yielded
            yielded += 1
    assert yielded == len(costs)
    assert worst_count <= window
    assert worst_cost <= 0  # an item is drawn only while the others cost less than budget


def test_small_items_flow_past_a_large_one_within_the_budget() -> None:
    """The point of the budget: with a large window, tiny items are drawn (and worked on)
    while the head item is still running, but large ones are held back."""
    costs = [100, 1, 1, 1, 1, 100, 1, 100]
    drawn: list[int] = []

    def items() -> Iterator[int]:
        for i in range(len(costs)):
            drawn.append(i)
            yield i

    with LocalExecutor(2) as ex:
        it = ex.map_ordered(lambda x: x, items(), 8, cost=costs.__getitem__, budget=150)
        assert next(it) == 0
        assert drawn == [0, 1, 2, 3, 4, 5]  # 100 + 4 (<150) then the next 100: stop
        assert list(it) == [1, 2, 3, 4, 5, 6, 7]


def test_encoder_threads_share_the_usable_cores() -> None:
    cores = default_jobs()
    vvc = Policy(codec="vvc")
    assert with_encoder_threads(vvc, cores).video["threads"] == 1
    assert with_encoder_threads(vvc, 1).video["threads"] == cores
    assert with_encoder_threads(vvc, 4 * cores).video["threads"] == 1
    assert with_encoder_threads(vvc, 1, remote=True).video["threads"] == 1
    chosen = Policy(codec="vvc", video={"threads": 3})
    assert with_encoder_threads(chosen, 1) == chosen  # the caller's choice stands
    assert with_encoder_threads(Policy(), 1) == Policy()  # exact has no encoder threads


def test_ready_items_pass_through_in_place() -> None:
    with LocalExecutor(2) as ex:
        out = list(ex.map_ordered(lambda x: -x, [1, Ready("kept"), 3]))
    assert out == [-1, "kept", -3]


def test_error_surfaces_at_its_item_and_stops_drawing() -> None:
    drawn: list[int] = []

    def items() -> Iterator[int]:
        for i in range(100):
            drawn.append(i)
            yield i

    def fail_on_3(x: int) -> int:
        if x == 3:
            raise CodecError(f"tensor 't{x}': broken")
        return x

    got: list[int] = []
    with LocalExecutor(2) as ex, pytest.raises(CodecError, match="t3"):
        for r in ex.map_ordered(fail_on_3, items()):
            got.append(r)
    assert got == [0, 1, 2]
    assert len(drawn) <= 3 + ex.default_window()


def test_bad_arguments_are_llmc_errors() -> None:
    with pytest.raises(LlmcError, match="window"):
        list(LocalExecutor(1).map_ordered(abs, [1], window=0))
    with pytest.raises(LlmcError, match="cost and budget"):
        list(LocalExecutor(1).map_ordered(abs, [1], budget=10))
    with pytest.raises(LlmcError, match="jobs"):
        LocalExecutor(0)
    with pytest.raises(LlmcError, match="executor must be"):
        make_executor("dask")
    with pytest.raises(LlmcError, match="ray executor"):
        make_executor("local", address="auto")


def _pack(path: Path, policy: Policy, **kw: object) -> bytes:
    pack_source(MemorySource(model()), path, policy=policy, **kw)  # type: ignore[arg-type]
    return path.read_bytes()


@pytest.mark.parametrize("policy", [Policy(), VVC_POLICY], ids=["exact", "vvc"])
def test_pack_is_byte_identical_across_job_counts_and_runs(tmp_path: Path, policy: Policy) -> None:
    one = _pack(tmp_path / "1.llmc", policy, jobs=1)
    assert _pack(tmp_path / "2.llmc", policy, jobs=2) == one
    with LocalExecutor(3) as ex:  # a caller's executor is used, and left open
        assert _pack(tmp_path / "3.llmc", policy, executor=ex) == one
        assert list(ex.map_ordered(abs, [-1])) == [1]


def test_timings_only_when_asked(tmp_path: Path) -> None:
    _pack(tmp_path / "t.llmc", VVC_POLICY, record_timings=True)
    _pack(tmp_path / "n.llmc", VVC_POLICY)
    with Reader(tmp_path / "t.llmc") as timed, Reader(tmp_path / "n.llmc") as plain:
        assert all(k in timed.tensor("proj").rd for k in TIMING_KEYS)
        assert not any(k in (plain.tensor(n).rd or {}) for n in plain.keys() for k in TIMING_KEYS)
        assert plain.tensor("proj").rd["snr_db"] == timed.tensor("proj").rd["snr_db"]


def test_parallel_decode_keeps_order_and_values(tmp_path: Path) -> None:
    path = tmp_path / "m.llmc"
    _pack(path, VVC_POLICY)
    with Reader(path) as r:
        serial = list(iter_tensors(r, jobs=1))
        seen: list[tuple[str, int, int]] = []
        parallel = list(iter_tensors(r, dtype="float32", jobs=3,
                                     progress=lambda n, d, t: seen.append((n, d, t))))
    assert [n for n, _ in parallel] == [n for n, _ in serial] == list(model())
    for (_, a), (_, b) in zip(serial, parallel, strict=True):
        assert np.array_equal(a.astype(b.dtype), b)
    assert [s[0] for s in seen] == list(model()) and seen[-1][1] == seen[-1][2]


def test_cli_unpack_jobs_and_executor_flags(tmp_path: Path) -> None:
    from safetensors.numpy import load_file, save_file

    src = tmp_path / "m.safetensors"
    save_file({k: v for k, v in model().items() if k != "emb"}, src)  # numpy safetensors: no bf16
    arc = tmp_path / "m.llmc"
    runner = CliRunner()
    r = runner.invoke(app, ["pack", str(src), "-o", str(arc), "--executor", "nope", "-q"])
    assert r.exit_code == 2 and not arc.exists()
    r = runner.invoke(app, ["pack", str(src), "-o", str(arc), "--ray-address", "auto", "-q"])
    assert r.exit_code == 2 and not arc.exists()
    r = runner.invoke(app, ["pack", str(src), "-o", str(arc), "-j", "2", "-q"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["unpack", str(arc), "-o", str(tmp_path / "out"), "-j", "2", "-q"])
    assert r.exit_code == 0, r.output
    back = load_file(str(tmp_path / "out" / "model.safetensors"))
    assert all(np.array_equal(back[k], v) for k, v in load_file(str(src)).items())


@pytest.mark.slow
def test_ray_pack_is_byte_identical_to_local(tmp_path: Path) -> None:
    """Ray start-up takes ~10 s here: slow. In-process local Ray with 2 CPUs."""
    ray = pytest.importorskip("ray")
    from llmc_format.pipeline.executor import RayExecutor

    policies = (Policy(), VVC_POLICY)
    local = [_pack(tmp_path / f"local-{i}.llmc", p) for i, p in enumerate(policies)]
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        with RayExecutor() as ex:
            assert ex.remote and ex.workers == 2
            for i, p in enumerate(policies):
                assert _pack(tmp_path / f"ray-{i}.llmc", p, executor=ex) == local[i]
            # a worker's error arrives as the llmc error it is, naming the tensor
            bad = Policy(codec="vvc", qp=37, min_lossy_numel=1024, preset="no-such-preset")
            with pytest.raises(CodecError, match="preset"):
                _pack(tmp_path / "bad.llmc", bad, executor=ex)
            assert not (tmp_path / "bad.llmc").exists()
        assert ray.is_initialized()  # it was the caller's Ray: left running
    finally:
        ray.shutdown()


def test_streamed_safetensors_writer_matches_the_buffered_one(tmp_path: Path) -> None:
    """unpack's streamed writer (one tensor in memory) writes what write_safetensors writes.

    (An io test kept here because it came with unpack's bounded-memory change.)
    """
    import json

    from safetensors import safe_open

    from llmc_format import dtypes
    from llmc_format.errors import SourceError
    from llmc_format.io import safetensors_sink as sinks

    tensors = model() | {"mask": np.array([True, False, True]), "big": np.arange(600, dtype=np.int32)}
    plan = [(n, dtypes.name_of(a.dtype), tuple(a.shape)) for n, a in tensors.items()]
    aliases = {"head": "emb"}
    for shard in (None, 4096):
        a, b = tmp_path / f"buffered-{shard}", tmp_path / f"streamed-{shard}"
        files_a = sinks.write_safetensors(iter(tensors.items()), a, shard, aliases=aliases)
        files_b = sinks.write_safetensors_streamed(plan, iter(tensors.items()), b, shard,
                                                   aliases=aliases)
        assert files_a == files_b and len(files_a) == (1 if shard is None else 4)  # 3 shards + index
        for f in files_a:
            if f.endswith(".json"):
                assert json.loads((a / f).read_text()) == json.loads((b / f).read_text())
                continue
            with safe_open(str(a / f), "pt") as fa, safe_open(str(b / f), "pt") as fb:
                assert fa.metadata() == fb.metadata() == {"format": "pt"}
                assert sorted(fa.keys()) == sorted(fb.keys())
                for k in fa.keys():
                    assert fa.get_tensor(k).equal(fb.get_tensor(k)), k
    wrong = [("zzz", *plan[0][1:]), *plan[1:]]  # the stream will not match the plan
    with pytest.raises(SourceError, match="expected tensor 'zzz' next, got 'emb'"):
        sinks.write_safetensors_streamed(wrong, iter(tensors.items()), tmp_path / "bad")
    assert list((tmp_path / "bad").iterdir()) == []
