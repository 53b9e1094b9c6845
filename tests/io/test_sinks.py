"""The output formats: the registry (``io/sinks.py``), what all formats share (aliases,
stale files of each other), and the torch and GGUF writers, on small arrays. The
safetensors writer's own tests are in tests/io/test_safetensors_sink.py.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
import torch

from llmc_format.errors import LlmcError, SourceError
from llmc_format.io import sinks
from llmc_format.io.gguf_sink import write_gguf
from llmc_format.io.safetensors_sink import write_safetensors
from llmc_format.io.torch_sink import write_torch

gguf = pytest.importorskip("gguf")


def _arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "a.weight": rng.standard_normal((4, 6)).astype(np.float32),
        "b.weight": rng.standard_normal((3, 5)).astype(ml_dtypes.bfloat16),
        "c.bias": rng.standard_normal(7).astype(np.float16),
        "ids": np.arange(5, dtype=np.int64),
        "scalar": np.array(2.5, np.float32),
    }


def _plan(tensors: dict[str, np.ndarray]) -> list[tuple[str, str, tuple[int, ...]]]:
    from llmc_format import dtypes

    return [(k, dtypes.name_of(v.dtype), v.shape) for k, v in tensors.items()]


def test_gguf_round_trips_every_supported_dtype(tmp_path: Path) -> None:
    t = _arrays()
    assert write_gguf(_plan(t), t.items(), tmp_path, architecture="toy",
                      metadata={"general.name": "toy", "x.n": 3, "x.f": 0.5, "x.b": True}) \
        == ["model.gguf"]
    r = gguf.GGUFReader(str(tmp_path / "model.gguf"))
    assert r.fields["general.architecture"].contents() == "toy"
    assert r.fields["x.n"].contents() == 3 and r.fields["x.b"].contents() is True
    got = {x.name: x for x in r.tensors}
    assert list(got) == list(t)
    assert got["b.weight"].tensor_type.name == "BF16"
    for name, want in t.items():
        data = np.asarray(got[name].data)
        if want.dtype == ml_dtypes.bfloat16:
            data = data.view(ml_dtypes.bfloat16)
        assert data.reshape(want.shape).tobytes() == want.tobytes(), name
    assert list(got["scalar"].shape) == [1]  # GGUF has no 0-d tensors
    assert [p for p in os.listdir(tmp_path) if p.endswith(".tmp")] == []


def test_gguf_refuses_what_it_cannot_hold_and_leaves_nothing(tmp_path: Path) -> None:
    t = {"ok": np.zeros(3, np.float32), "mask": np.zeros(3, bool)}
    with pytest.raises(SourceError, match=r"'mask'.*bool.*no GGUF type"):
        write_gguf(_plan(t), t.items(), tmp_path, architecture="toy")
    t = {"deep": np.zeros((1, 1, 1, 1, 2), np.float32)}
    with pytest.raises(SourceError, match=r"'deep'.*5 dimensions"):
        write_gguf(_plan(t), t.items(), tmp_path, architecture="toy")
    t = _arrays()
    wrong = [("a.weight", "float32", (4, 6)), ("c.bias", "float16", (7,))]
    with pytest.raises(SourceError, match=r"expected tensor 'c.bias' next, got 'b.weight'"):
        write_gguf(wrong, t.items(), tmp_path, architecture="toy")
    assert os.listdir(tmp_path) == []


def test_torch_writer_shards_and_shares_alias_storage(tmp_path: Path) -> None:
    t = {f"layer.{i}.weight": np.full((10, 10), i, np.float32) for i in range(4)}  # 400 B each
    files = write_torch(t.items(), tmp_path, shard_size=900, aliases={"head.weight": "layer.3.weight"})
    assert files == [f"pytorch_model-0000{i}-of-00002.bin" for i in (1, 2)] + \
        ["pytorch_model.bin.index.json"]
    index = json.loads((tmp_path / "pytorch_model.bin.index.json").read_text())
    assert index["weight_map"]["head.weight"] == index["weight_map"]["layer.3.weight"] == files[1]
    assert index["metadata"]["total_size"] == 4 * 400  # the alias costs nothing
    last = torch.load(tmp_path / files[1], weights_only=True)
    assert last["head.weight"].data_ptr() == last["layer.3.weight"].data_ptr()
    assert float(last["head.weight"][0, 0]) == 3.0


def test_aliases_are_copies_in_safetensors(tmp_path: Path) -> None:
    from safetensors.numpy import load_file

    t = _arrays()
    write_safetensors(t.items(), tmp_path, aliases={"tied": "a.weight"})
    back = load_file(str(tmp_path / "model.safetensors"))
    assert back["tied"].tobytes() == t["a.weight"].tobytes()


@pytest.mark.parametrize("writer", ["safetensors", "pt", "gguf"])
def test_bad_aliases_are_refused(writer: str, tmp_path: Path) -> None:
    t = {"a": np.zeros(2, np.float32)}

    def write(aliases: dict[str, str]) -> None:
        if writer == "safetensors":
            write_safetensors(t.items(), tmp_path, aliases=aliases)
        elif writer == "pt":
            write_torch(t.items(), tmp_path, aliases=aliases)
        else:
            write_gguf(_plan(t), t.items(), tmp_path, architecture="toy", aliases=aliases)

    with pytest.raises(SourceError, match="'b' points at 'nowhere', which was never written"):
        write({"b": "nowhere"})
    with pytest.raises(SourceError, match="itself an alias"):
        write({"b": "a", "c": "b"})
    with pytest.raises(SourceError, match="both written and an alias"):
        write({"a": "z"})
    assert os.listdir(tmp_path) == []


def test_each_format_removes_the_others_stale_checkpoints(tmp_path: Path) -> None:
    t = _arrays()
    write_torch(t.items(), tmp_path)
    write_safetensors(t.items(), tmp_path, shard_size=50)
    assert not (tmp_path / "pytorch_model.bin").exists()
    assert (tmp_path / "model.safetensors.index.json").exists()
    (tmp_path / "keep.txt").write_text("x")
    write_gguf(_plan(t), t.items(), tmp_path, architecture="toy")
    assert sorted(os.listdir(tmp_path)) == ["keep.txt", "model.gguf"]
    write_torch(t.items(), tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["keep.txt", "pytorch_model.bin"]
    umask = os.umask(0o022)
    os.umask(umask)
    assert (tmp_path / "pytorch_model.bin").stat().st_mode & 0o777 == 0o666 & ~umask


def write_npz(job: sinks.SinkJob) -> list[str]:
    """A toy output format registered by a test: every tensor in one ``model.npz``."""
    arrays = dict(job.tensors)
    assert list(arrays) == [name for name, _, _ in job.plan]
    with open(job.out_dir / "model.npz", "xb") as f:
        np.savez(f, **arrays, **{a: arrays[t] for a, t in job.aliases.items()})
    return ["model.npz"]


@pytest.fixture
def npz_sink() -> Iterator[sinks.SinkFormat]:
    fmt = sinks.register_sink(sinks.SinkFormat(
        "npz", f"{__name__}:write_npz", re.compile(r"model\.npz"), "numpy's npz (a test)"))
    yield fmt
    del sinks.SINK_FORMATS["npz"]


def test_a_registered_format_is_an_unpack_choice(npz_sink: sinks.SinkFormat, tmp_path: Path) -> None:
    """Adding an output format is one module and one ``register_sink``: unpack writes it,
    lists it, and replaces it as a stale file of ours when another format is written."""
    import llmc_format
    from llmc_format.pipeline import unpack as up

    t = _arrays()
    llmc_format.save_file(t, tmp_path / "a.llmc")
    assert "npz" in up.FORMATS and "npz" in ", ".join(up.FORMATS)
    res = up.unpack(tmp_path / "a.llmc", tmp_path / "out", format="npz")
    assert res.files == ["model.npz"]
    with np.load(tmp_path / "out" / "model.npz") as back:
        assert sorted(back.files) == sorted(t)
        assert all(back[k].tobytes() == v.tobytes() for k, v in t.items())
    with pytest.raises(LlmcError, match="shard_size applies to safetensors, pt; npz is written"):
        up.unpack(tmp_path / "a.llmc", tmp_path / "out2", format="npz", shard_size=100)
    up.unpack(tmp_path / "a.llmc", tmp_path / "out", format="pt")  # over a non-empty dir
    assert sorted(os.listdir(tmp_path / "out")) == ["pytorch_model.bin"]  # npz: stale, removed


def test_unknown_format_names_the_choices(tmp_path: Path) -> None:
    with pytest.raises(LlmcError, match="format must be one of safetensors, pt, gguf, not 'zip'"):
        sinks.sink_format("zip")


def test_each_format_owns_the_names_it_writes() -> None:
    """The registry's file patterns (stale-file removal) match every name a writer uses."""
    from llmc_format.io.gguf_sink import GGUF_NAME
    from llmc_format.io.safetensors_sink import SAFETENSORS
    from llmc_format.io.torch_sink import TORCH

    for fmt, layout in (("safetensors", SAFETENSORS), ("pt", TORCH)):
        names = [layout.single, layout.index, layout.shard(1, 2), layout.shard(12, 99999)]
        assert all(sinks.SINK_FORMATS[fmt].owns(n) for n in names), fmt
        assert not any(sinks.SINK_FORMATS[other].owns(n) for n in names
                       for other in sinks.SINK_FORMATS if other != fmt)
    assert sinks.SINK_FORMATS["gguf"].owns(GGUF_NAME)
    assert not any(f.owns("config.json") or f.owns("model.safetensors.tmp")
                   for f in sinks.SINK_FORMATS.values())
