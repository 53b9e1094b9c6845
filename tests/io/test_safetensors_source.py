"""Reading .safetensors files: bit-exact, lazy, in file order, with clear errors."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from llmc_format.dtypes import SAFETENSORS_NAMES
from llmc_format.errors import SourceError
from llmc_format.io import open_source


def _assert_matches_file(path: Path, oracle: dict) -> int:
    """Every tensor the source yields equals the file's bytes (hand-parsed); returns count."""
    with open_source(path) as src:
        names = [name for name, _ in src.tensors()]
        assert sorted(names) == sorted(oracle)
        for name, entry in src.tensors():
            code, shape, raw = oracle[name]
            assert (entry.dtype, list(entry.shape)) == (SAFETENSORS_NAMES[code], shape)
            arr = entry()
            assert arr.shape == tuple(shape)
            assert arr.tobytes() == raw, name
    return len(names)


def test_minilm_fp32_is_read_bit_exactly(minilm_file: Path, read_raw_safetensors) -> None:
    assert _assert_matches_file(minilm_file, read_raw_safetensors(minilm_file)) == 104


@pytest.fixture(scope="module")
def minilm_bf16(minilm_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """MiniLM converted to bf16 (floats) — the dtype numpy cannot represent natively."""
    state = load_file(str(minilm_file))
    converted = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in state.items()}
    out = tmp_path_factory.mktemp("bf16") / "model.safetensors"
    save_file(converted, str(out), metadata={"format": "pt"})
    return out


def test_minilm_bf16_is_read_bit_exactly(minilm_bf16: Path, read_raw_safetensors) -> None:
    assert _assert_matches_file(minilm_bf16, read_raw_safetensors(minilm_bf16)) == 104
    with open_source(minilm_bf16) as src:
        entry = dict(src.tensors())["embeddings.word_embeddings.weight"]
        arr = entry()
    assert entry.dtype == "bfloat16"
    assert arr.dtype == np.dtype(ml_dtypes.bfloat16)


def test_order_is_the_files_data_order(minilm_file: Path) -> None:
    blob = minilm_file.read_bytes()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + n])
    header.pop("__metadata__", None)
    by_offset = sorted(header, key=lambda k: header[k]["data_offsets"][0])
    assert by_offset != sorted(header)  # the file is not in name order: the check means something
    with open_source(minilm_file) as src:
        assert [name for name, _ in src.tensors()] == by_offset


def test_specs_come_from_the_header_without_reading_data(
    minilm_bf16: Path, tmp_path: Path, read_raw_safetensors
) -> None:
    """Open, plan, then change the data bytes on disk: the loader sees the new bytes, so
    nothing was read before it was called."""
    path = tmp_path / "m.safetensors"
    shutil.copy(minilm_bf16, path)
    oracle = read_raw_safetensors(path)
    name = "encoder.layer.0.attention.self.query.weight"
    _, shape, raw = oracle[name]
    with open_source(path) as src:
        specs = {s.name: s for s in src.specs()}
        assert specs[name].dtype == "bfloat16"
        assert specs[name].shape == tuple(shape)
        # patch the tensor's bytes in place (same size, header intact)
        blob = path.read_bytes()
        start = blob.index(raw)
        new = bytes(len(raw))  # zeros
        with path.open("r+b") as f:
            f.seek(start)
            f.write(new)
        arr = dict(src.tensors())[name]()
    assert arr.tobytes() == new


def test_describe_has_no_absolute_paths(minilm_file: Path) -> None:
    with open_source(minilm_file) as src:
        facts = src.describe()
    assert facts["format"] == "safetensors"
    assert facts["files"] == [{"name": "model.safetensors", "size": minilm_file.stat().st_size}]
    assert str(minilm_file.parent) not in repr(facts)


def test_unsupported_dtype_names_file_and_tensor(tmp_path: Path, make_raw_safetensors) -> None:
    path = tmp_path / "odd.safetensors"
    make_raw_safetensors(path, {"ok": ("F32", [1], bytes(4)), "scales": ("F8_E8M0", [4], bytes(4))})
    with pytest.raises(SourceError, match=r"odd\.safetensors.*'scales'.*F8_E8M0"):
        open_source(path)


def test_corrupt_header_is_a_source_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.safetensors"
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json!!!!!!}")
    with pytest.raises(SourceError, match=r"bad\.safetensors"):
        open_source(path)


def test_declared_shape_mismatch_is_caught_on_load(tmp_path: Path) -> None:
    """A loader that returns something else than the header promised is reported."""
    from llmc_format.io.base import SourceTensor

    entry = SourceTensor("w", "float32", (2, 2), lambda: np.zeros(3, np.float32), file="f")
    with pytest.raises(SourceError, match=r"'w'.*float32\[2, 2\]"):
        entry()
