"""Shared fixtures for the io tests: the real models on disk, and file builders.

Helpers are handed out as fixtures because tests run with ``--import-mode=importlib``
(a test module cannot import a sibling helper module).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
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


@pytest.fixture(scope="session")
def make_tiny_gguf() -> Callable[..., None]:
    return write_tiny_llama_gguf


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


def write_tiny_llama_gguf(path: Path, lin_type: str = "Q4_1", emb_type: str = "Q8_0",
                          norm_type: str = "F32", tied: bool = True, seed: int = 0,
                          layers: int = 2) -> None:
    """A llama GGUF (2 layers by default) with random weights, quantized like llama.cpp
    would; its blocks in string order (blk.1, blk.10, blk.11, blk.2...) as converters
    write them."""
    import gguf
    from gguf import GGMLQuantizationType as Q

    rng = np.random.default_rng(seed)
    hidden, ff, heads, kv, vocab = 64, 128, 4, 2, 96
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny")
    w.add_block_count(layers)
    w.add_context_length(128)
    w.add_embedding_length(hidden)
    w.add_feed_forward_length(ff)
    w.add_head_count(heads)
    w.add_head_count_kv(kv)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(hidden // heads)
    w.add_vocab_size(vocab)

    def add(name: str, shape: tuple[int, ...], type_name: str) -> None:
        a = rng.standard_normal(shape).astype(np.float32)
        if type_name == "F32":
            w.add_tensor(name, a)
        elif type_name == "F16":
            w.add_tensor(name, a.astype(np.float16))
        else:
            qtype = Q[type_name]
            q = gguf.quants.quantize(a, qtype)
            w.add_tensor(name, q, raw_shape=q.shape, raw_dtype=qtype)

    add("token_embd.weight", (vocab, hidden), emb_type)
    kv_rows = kv * hidden // heads
    for i in sorted(range(layers), key=str):
        add(f"blk.{i}.attn_norm.weight", (hidden,), norm_type)
        add(f"blk.{i}.attn_q.weight", (hidden, hidden), lin_type)
        add(f"blk.{i}.attn_k.weight", (kv_rows, hidden), lin_type)
        add(f"blk.{i}.attn_v.weight", (kv_rows, hidden), lin_type)
        add(f"blk.{i}.attn_output.weight", (hidden, hidden), lin_type)
        add(f"blk.{i}.ffn_norm.weight", (hidden,), norm_type)
        add(f"blk.{i}.ffn_gate.weight", (ff, hidden), lin_type)
        add(f"blk.{i}.ffn_up.weight", (ff, hidden), lin_type)
        add(f"blk.{i}.ffn_down.weight", (hidden, ff), lin_type)
    add("output_norm.weight", (hidden,), norm_type)
    if not tied:
        add("output.weight", (vocab, hidden), lin_type)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
