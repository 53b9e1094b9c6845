"""``llmc_format.decode``: the source-block path holds the same bounds as ``read_tensor``."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from llmc_format.container.reader import Reader
from llmc_format.decode import read_native_blocks, read_tensor
from llmc_format.errors import CodecError, LimitError

VECTOR = Path(__file__).resolve().parents[1] / "spec" / "vectors" / "v1-ggml.llmc"


def _tensor(obj: dict, name: str) -> dict:
    return next(t for t in obj["tensors"] if t["name"] == name)


def test_native_blocks_refuse_a_shape_the_blobs_cannot_hold(
        tmp_path: Path, rewrite_index: Callable[[Path, Callable[[dict], None]], None]) -> None:
    """A ggml tensor declaring ~800 GB over its 458 stored bytes (one blob, rows_per_blob
    matching): refused before ``decode_blocks`` allocates the blocks (was: MemoryError)."""
    path = tmp_path / "bomb.llmc"
    shutil.copyfile(VECTOR, path)
    rows = 3 << 28

    def lie(obj: dict) -> None:
        t = _tensor(obj, "mlp.IQ4_XS")
        t["shape"] = [rows, 256]
        t["pipeline"][-1]["rows_per_blob"] = rows

    rewrite_index(path, lie)
    with Reader(path) as r:
        assert len(read_native_blocks(r, "embed.Q8_0")) == 10 * 96 // 32 * 34  # others intact
        with pytest.raises(LimitError, match="stored bytes can hold"):
            read_native_blocks(r, "mlp.IQ4_XS")


def test_native_blocks_check_the_stored_config(
        tmp_path: Path, rewrite_index: Callable[[Path, Callable[[dict], None]], None]) -> None:
    """A stored ggml config without a required key is refused with the same error as in
    ``read_tensor`` (closed configs, FORMAT.md §7), not by whatever the codec trips on."""
    path = tmp_path / "missing.llmc"
    shutil.copyfile(VECTOR, path)
    rewrite_index(path, lambda obj: _tensor(obj, "embed.Q8_0")["pipeline"][-1].pop("layout"))
    with Reader(path) as r:
        for read in (read_native_blocks, read_tensor):
            with pytest.raises(CodecError, match=r"stored 'ggml' config lacks \['layout'\]"):
                read(r, "embed.Q8_0")
