"""Shared fixtures for the io tests: the real models on disk, and safetensors builders
(the GGUF builder, ``make_tiny_gguf``, is shared with tests/pipeline: tests/conftest.py).

Helpers are handed out as fixtures because tests run with ``--import-mode=importlib``
(a test module cannot import a sibling helper module).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def minilm_file(minilm_dir: Path) -> Path:
    return minilm_dir / "model.safetensors"



@pytest.fixture(scope="session")
def read_raw_safetensors() -> Callable[[Path], dict[str, tuple[str, list[int], bytes]]]:
    return raw_safetensors


@pytest.fixture(scope="session")
def make_raw_safetensors() -> Callable[..., None]:
    return write_raw_safetensors


def raw_safetensors(path: Path) -> dict[str, tuple[str, list[int], bytes]]:
    """name -> (dtype code, shape, raw bytes), parsed by hand: an oracle independent of
    the safetensors library, for bit-exactness checks."""
    blob = path.read_bytes()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + n])
    header.pop("__metadata__", None)
    base = 8 + n
    out = {}
    for name, info in header.items():
        start, end = info["data_offsets"]
        out[name] = (info["dtype"], info["shape"], blob[base + start : base + end])
    return out


def write_raw_safetensors(path: Path, tensors: dict[str, tuple[str, list[int], bytes]]) -> None:
    """Write a safetensors file by hand (lets tests use dtype codes llmc cannot store)."""
    header, offset, data = {}, 0, b""
    for name, (code, shape, raw) in tensors.items():
        header[name] = {"dtype": code, "shape": shape, "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
        data += raw
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    path.write_bytes(struct.pack("<Q", len(h)) + h + data)
