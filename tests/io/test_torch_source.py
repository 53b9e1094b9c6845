"""Torch state-dict files: read with weights_only, never executing what a pickle says."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
import torch

from llmc_format.errors import SourceError
from llmc_format.io import open_source


class _Evil:
    """Unpickling this creates a directory: the proof that code ran."""

    marker = ""

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def _evil(marker: Path) -> _Evil:
    e = _Evil()
    e.marker = str(marker)
    return e


def test_state_dict_is_read_bit_exactly(tmp_path: Path) -> None:
    state = {
        "w": torch.randn(8, 16).to(torch.bfloat16),
        "b": torch.randn(16, dtype=torch.float16),
        "t": torch.randn(4, 6).T,  # non-contiguous view as saved
        "i": torch.arange(5, dtype=torch.int64),
        "f8": torch.randn(4).to(torch.float8_e4m3fn),
    }
    path = tmp_path / "model.pt"
    torch.save(state, path)
    with open_source(path) as src:
        entries = dict(src.tensors())
        assert list(entries) == list(state)  # the dict's order
        assert {n: (e.dtype, e.shape) for n, e in entries.items()} == {
            "w": ("bfloat16", (8, 16)), "b": ("float16", (16,)), "t": ("float32", (6, 4)),
            "i": ("int64", (5,)), "f8": ("float8_e4m3fn", (4,)),
        }
        got = {n: e() for n, e in entries.items()}
        assert src.describe() == {"format": "torch", "files": [{"name": "model.pt",
                                                               "size": path.stat().st_size}]}
    assert got["w"].dtype == np.dtype(ml_dtypes.bfloat16)
    assert got["w"].tobytes() == state["w"].view(torch.int16).numpy().tobytes()
    assert got["t"].tolist() == state["t"].tolist()
    assert got["f8"].tobytes() == state["f8"].view(torch.uint8).numpy().tobytes()
    assert got["b"].tobytes() == state["b"].numpy().tobytes()


def test_zip_checkpoint_data_is_read_only_when_asked(tmp_path: Path) -> None:
    """mmap: after open, overwrite the tensor's bytes on disk; the loader sees the new ones."""
    old = np.full(256, 1.5, np.float32)
    path = tmp_path / "m.pt"
    torch.save({"w": torch.from_numpy(old.copy())}, path)
    with open_source(path) as src:
        entry = dict(src.tensors())["w"]
        blob = path.read_bytes()
        start = blob.index(old.tobytes())
        new = np.full(256, -2.0, np.float32)
        with path.open("r+b") as f:
            f.seek(start)
            f.write(new.tobytes())
        assert entry().tobytes() == new.tobytes()


def test_shared_storage_is_reported_as_alias(tmp_path: Path) -> None:
    emb = torch.randn(6, 3)
    qkv = torch.randn(9, 3)
    state = {"emb": emb, "head": emb, "q": qkv[:3], "k": qkv[3:6]}  # slices: not aliases
    path = tmp_path / "tied.bin"
    torch.save(state, path)
    with open_source(path) as src:
        assert [n for n, _ in src.tensors()] == ["emb", "q", "k"]
        assert src.aliases() == {"head": "emb"}
        assert dict(src.tensors())["k"]().tolist() == qkv[3:6].tolist()


def test_legacy_non_zip_format_is_read(tmp_path: Path) -> None:
    path = tmp_path / "old.pth"
    torch.save({"x": torch.arange(3.0)}, path, _use_new_zipfile_serialization=False)
    with open_source(path) as src:
        assert dict(src.tensors())["x"]().tolist() == [0.0, 1.0, 2.0]


@pytest.mark.parametrize("kind", ["zip", "legacy-pickle"])
def test_malicious_pickle_is_refused_and_not_executed(tmp_path: Path, kind: str) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "model.bin"
    payload = {"w": torch.zeros(2), "x": _evil(marker)}
    if kind == "zip":
        torch.save(payload, path)
    else:
        with path.open("wb") as f:
            pickle.dump(payload, f, protocol=2)
    proof = tmp_path / "proof"  # the payload is live when unpickled unsafely
    pickle.loads(pickle.dumps(_evil(proof)))
    assert proof.is_dir()
    with pytest.raises(SourceError, match=r"model\.bin.*weights_only"):
        open_source(path)
    assert not marker.exists()


def test_non_tensor_entries_and_dtypes_are_refused(tmp_path: Path) -> None:
    p1 = tmp_path / "ckpt.pt"
    torch.save({"w": torch.zeros(1), "epoch": 3}, p1)
    with pytest.raises(SourceError, match=r"ckpt\.pt.*'epoch'.*int"):
        open_source(p1)
    p2 = tmp_path / "cplx.pt"
    torch.save({"z": torch.zeros(2, dtype=torch.complex64)}, p2)
    with pytest.raises(SourceError, match=r"cplx\.pt.*'z'"):
        open_source(p2)
    p3 = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], p3)
    with pytest.raises(SourceError, match="not a state dict"):
        open_source(p3)
