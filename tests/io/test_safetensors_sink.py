"""Writing safetensors checkpoints (single/sharded) and attachments, safely and exactly."""

from __future__ import annotations

import json
import os
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmc_format import dtypes
from llmc_format.errors import SourceError
from llmc_format.io import open_source, write_attachments, write_safetensors
from llmc_format.io.safetensors_sink import INDEX_NAME, SINGLE_NAME, shard_name


def _bits(name: str, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    dt = dtypes.to_numpy(name)
    raw = rng.integers(0, 256, size=int(np.prod(shape)) * dt.itemsize, dtype=np.uint8)
    if name == "bool":
        return (raw & 1).astype(bool).reshape(shape)
    return raw.view(dt).reshape(shape)


def _read_back(out: Path) -> dict[str, np.ndarray]:
    with open_source(out) as src:
        return {name: entry() for name, entry in src.tensors()}


names_st = st.lists(
    st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=12),
    min_size=1, max_size=6, unique=True,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    names=names_st,
    dtype_names=st.lists(st.sampled_from(dtypes.all_names()), min_size=6, max_size=6),
    shapes=st.lists(st.lists(st.integers(0, 6), max_size=3).map(tuple), min_size=6, max_size=6),
    shard_size=st.one_of(st.none(), st.integers(1, 200)),
    seed=st.integers(0, 2**32 - 1),
)
def test_any_tensors_round_trip_through_write_and_source(
    tmp_path_factory: pytest.TempPathFactory, names: list[str], dtype_names: list[str],
    shapes: list[tuple[int, ...]], shard_size: int | None, seed: int,
) -> None:
    rng = np.random.default_rng(seed)
    tensors = {n: _bits(dtype_names[i], shapes[i], rng) for i, n in enumerate(names)}
    out = tmp_path_factory.mktemp("rt")
    written = write_safetensors(tensors.items(), out, shard_size=shard_size)
    back = _read_back(out)
    assert sorted(back) == sorted(tensors)  # safetensors orders a file's data by dtype, name
    for n, arr in tensors.items():
        assert back[n].dtype == arr.dtype and back[n].shape == arr.shape
        assert back[n].tobytes() == arr.tobytes()
    if len(written) == 1:
        assert written == [SINGLE_NAME]
    else:
        assert written[-1] == INDEX_NAME
    assert not [p for p in os.listdir(out) if p.endswith(".tmp")]


def test_sharding_follows_hugging_face_layout(tmp_path: Path, read_raw_safetensors) -> None:
    rng = np.random.default_rng(1)
    tensors = [(f"layer.{i}.weight", rng.standard_normal((10, 10)).astype(np.float32))
               for i in range(5)]  # 400 bytes each
    tensors.append(("big", np.zeros((50, 10), ml_dtypes.bfloat16)))  # 1000 bytes > shard size
    written = write_safetensors(iter(tensors), tmp_path, shard_size=900, metadata={"k": "v"})
    shards = [shard_name(i, 4) for i in range(1, 5)]
    assert written == [*shards, INDEX_NAME]
    index = json.loads((tmp_path / INDEX_NAME).read_text())
    assert index["metadata"]["total_size"] == 5 * 400 + 1000
    assert index["weight_map"] == {
        "big": shards[3], "layer.0.weight": shards[0], "layer.1.weight": shards[0],
        "layer.2.weight": shards[1], "layer.3.weight": shards[1], "layer.4.weight": shards[2],
    }
    assert list(index["weight_map"]) == sorted(index["weight_map"])
    oracle = read_raw_safetensors(tmp_path / shards[1])
    assert oracle["layer.3.weight"][2] == tensors[3][1].tobytes()
    with open_source(tmp_path) as src:
        assert src.describe()["files"][0]["name"] == shards[0]
    from safetensors import safe_open

    with safe_open(str(tmp_path / shards[0]), "np") as f:
        assert f.metadata() == {"format": "pt", "k": "v"}


def test_rewrite_removes_stale_shards(tmp_path: Path) -> None:
    a = np.ones((100,), np.float32)
    write_safetensors([("a", a), ("b", a), ("c", a)], tmp_path, shard_size=400)
    assert (tmp_path / INDEX_NAME).exists()
    (tmp_path / "config.json").write_text("{}")
    assert write_safetensors([("a", a)], tmp_path) == [SINGLE_NAME]
    assert sorted(os.listdir(tmp_path)) == ["config.json", SINGLE_NAME]


def test_failure_midway_leaves_no_files(tmp_path: Path) -> None:
    def stream():
        yield "a", np.zeros(100, np.float32)
        yield "b", np.zeros(100, np.float32)
        raise RuntimeError("reader died")

    with pytest.raises(RuntimeError, match="reader died"):
        write_safetensors(stream(), tmp_path, shard_size=400)
    assert os.listdir(tmp_path) == []


def test_bad_inputs_are_refused(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="twice"):
        write_safetensors([("a", np.zeros(1)), ("a", np.zeros(1))], tmp_path)
    with pytest.raises(SourceError, match=r"'c'.*complex"):
        write_safetensors([("c", np.zeros(1, np.complex64))], tmp_path)
    with pytest.raises(SourceError, match="shard_size"):
        write_safetensors([], tmp_path, shard_size=0)
    assert os.listdir(tmp_path) == []


def test_same_array_under_two_names_is_written_twice(tmp_path: Path) -> None:
    a = np.arange(6, dtype=np.float32)
    write_safetensors([("x", a), ("y", a), ("z", a[:3])], tmp_path)
    back = _read_back(tmp_path)
    assert back["x"].tolist() == back["y"].tolist() == a.tolist()
    assert back["z"].tolist() == [0.0, 1.0, 2.0]


def test_non_contiguous_and_big_endian_are_normalised(tmp_path: Path) -> None:
    a = np.arange(12, dtype=">i4").reshape(3, 4)[:, 1::2]
    write_safetensors([("a", a)], tmp_path)
    assert _read_back(tmp_path)["a"].tolist() == [[1, 3], [5, 7], [9, 11]]


# -- attachments ----------------------------------------------------------------------


def test_attachments_are_written_under_nested_paths(tmp_path: Path) -> None:
    items = [("config.json", b"{}"), ("1_Pooling/config.json", b'{"x": 1}')]
    assert write_attachments(iter(items), tmp_path) == ["config.json", "1_Pooling/config.json"]
    assert (tmp_path / "1_Pooling" / "config.json").read_bytes() == b'{"x": 1}'


@pytest.mark.parametrize(
    "bad",
    ["/etc/passwd", "../escape.txt", "a/../../escape.txt", "a/./b", "a//b", "", "a\\..\\b",
     "C:/windows.txt", "nul\x00byte"],
)
def test_escaping_paths_are_refused_before_anything_is_written(tmp_path: Path, bad: str) -> None:
    out = tmp_path / "out"
    with pytest.raises(SourceError, match="attachment path"):
        write_attachments([("fine.txt", b"x"), (bad, b"evil")], out)
    assert not (out / "fine.txt").exists()
    assert not (tmp_path / "escape.txt").exists()


def test_symlinked_directory_cannot_redirect_writes(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / "sub").symlink_to(outside, target_is_directory=True)
    with pytest.raises(SourceError, match="outside the output directory"):
        write_attachments([("sub/evil.txt", b"evil")], out)
    assert list(outside.iterdir()) == []


def test_symlink_at_target_is_refused(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"keep")
    out = tmp_path / "out"
    out.mkdir()
    (out / "config.json").symlink_to(victim)
    with pytest.raises(SourceError, match="symlink"):
        write_attachments([("config.json", b"evil")], out)
    assert victim.read_bytes() == b"keep"


def test_duplicate_and_non_bytes_attachments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="twice"):
        write_attachments([("a", b"1"), ("a", b"2")], tmp_path)
    with pytest.raises(SourceError, match="not bytes"):
        write_attachments([("a", "text")], tmp_path)
