"""Shared fixtures of the end-to-end tests: real models, the CLI, transformers offline.

Everything here runs offline: ``HF_HUB_OFFLINE`` is set before transformers is imported
by these tests, and every load passes ``local_files_only=True``. Helpers are fixtures
because tests run with ``--import-mode=importlib`` (no sibling-module imports).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

# before any test imports transformers (huggingface_hub reads it at import)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

#: sentences embedded to compare models (varied topics and lengths, padding exercised)
SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "A man is playing a guitar on stage.",
    "Stock markets fell sharply on Monday after the central bank's announcement.",
    "llmc stores model weights with video codecs.",
]





@pytest.fixture(scope="session")
def llmc() -> Callable[..., Any]:
    """Run the ``llmc`` command in-process; returns the click Result."""
    from typer.testing import CliRunner

    from llmc_format.cli import app

    runner = CliRunner()

    def run(*args: object) -> Any:
        return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)

    return run


def mean_pooled(model: Any, tokenizer: Any) -> Any:
    """Sentence embeddings of ``SENTENCES`` (mean over tokens, as all-MiniLM-L6-v2 pools)."""
    import torch

    batch = tokenizer(SENTENCES, return_tensors="pt", padding=True)
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state.float()
    mask = batch["attention_mask"].unsqueeze(-1).float()
    return (hidden * mask).sum(1) / mask.sum(1)


@pytest.fixture(scope="session")
def embed() -> Callable[[Any, Any], Any]:
    return mean_pooled


@pytest.fixture(scope="session")
def load_dir() -> Callable[[Path], tuple[Any, Any]]:
    """``(AutoModel, AutoTokenizer)`` from a directory, offline."""

    def load(path: Path) -> tuple[Any, Any]:
        from transformers import AutoModel, AutoTokenizer

        model = AutoModel.from_pretrained(str(path), local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        return model.eval(), tokenizer

    return load


@pytest.fixture(scope="session")
def minilm_reference(minilm_dir: Path, load_dir: Callable[[Path], tuple[Any, Any]]) -> Any:
    """The original model's embeddings of ``SENTENCES``."""
    return mean_pooled(*load_dir(minilm_dir))


@pytest.fixture(scope="session")
def minilm_exact(tmp_path_factory: pytest.TempPathFactory, minilm_dir: Path,
                 llmc: Callable[..., Any]) -> Path:
    """MiniLM-L6 packed losslessly with the CLI (once per session)."""
    archive = tmp_path_factory.mktemp("exact") / "minilm.llmc"
    r = llmc("pack", minilm_dir, "-o", archive, "-q")
    assert r.exit_code == 0, r.output
    return archive


@pytest.fixture(scope="session")
def vvc_codec() -> None:
    """Skip (saying why) only if the vvc codec class cannot be imported."""
    from llmc_format.codecs.registry import get_codec_class

    try:
        get_codec_class("vvc")
    except Exception as exc:  # the video module is optional/in progress: report, don't fail
        pytest.skip(f"the 'vvc' codec does not import: {type(exc).__name__}: {exc}")
