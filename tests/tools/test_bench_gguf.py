"""tools.bench_gguf's file makers and size accounting, on GGUFs written here with gguf-py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")

from tools.bench_gguf import gguf_metadata_bytes, markdown, write_ggufpy  # noqa: E402


def _write(path: Path, cols: int, seed: int = 0) -> dict[str, np.ndarray]:
    """A GGUF with one F32 matrix, one F32 norm and a few key/values; returns the tensors."""
    rng = np.random.default_rng(seed)
    tensors = {"blk.0.attn_q.weight": (rng.standard_normal((8, cols)) * 0.02).astype(np.float32),
               "blk.0.attn_norm.weight": rng.standard_normal(cols).astype(np.float32)}
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny")
    w.add_block_count(1)
    for name, a in tensors.items():
        w.add_tensor(name, a)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return tensors


@pytest.mark.parametrize("qtype", ["Q4_0", "Q8_0"])
def test_ggufpy_file_quantizes_every_matrix_keeps_norms_and_metadata(tmp_path: Path,
                                                                     qtype: str) -> None:
    src, dst = tmp_path / "src.gguf", tmp_path / f"{qtype}.gguf"
    tensors = _write(src, cols=256)
    write_ggufpy(src, dst, qtype)
    r = gguf.GGUFReader(str(dst))
    assert {t.name: t.tensor_type.name for t in r.tensors} == {
        "blk.0.attn_q.weight": qtype, "blk.0.attn_norm.weight": "F32"}
    assert r.fields["general.name"].contents() == "tiny"
    assert r.fields["llama.block_count"].contents() == 1
    by_name = {t.name: t for t in r.tensors}
    norm = by_name["blk.0.attn_norm.weight"]
    np.testing.assert_array_equal(np.asarray(norm.data).ravel(), tensors["blk.0.attn_norm.weight"])
    q = by_name["blk.0.attn_q.weight"]
    deq = gguf.dequantize(q.data, q.tensor_type).reshape(8, 256)
    ref = tensors["blk.0.attn_q.weight"]
    rel = float(np.linalg.norm(deq - ref) / np.linalg.norm(ref))
    assert 0 < rel < (0.15 if qtype == "Q4_0" else 0.01)  # lossy, at the type's precision


def test_gguf_metadata_bytes_do_not_grow_with_the_tensor_data(tmp_path: Path) -> None:
    small, large = tmp_path / "s.gguf", tmp_path / "l.gguf"
    _write(small, cols=256)
    _write(large, cols=1024)
    meta = gguf_metadata_bytes(small)
    assert 0 < meta < small.stat().st_size
    assert meta == gguf_metadata_bytes(large)  # same names and keys, 4x the data
    data = 4 * (8 * 256 + 256)
    assert meta == small.stat().st_size - data


def test_markdown_orders_by_size_and_names_the_reference() -> None:
    rows = [{"label": "b", "bytes": 2_000_000, "mb": 2.0, "ppl": 30.0},
            {"label": "a", "bytes": 1_000_000, "mb": 1.0, "ppl": 40.0, "llama_cpp": "IQ2_XS",
             "llama_cpp_ppl": 40.22, "lossy_tensors": 3, "kept_exact_tensors": 1}]
    table = markdown(rows).splitlines()
    assert table[2].startswith("| a | 1.00 |") and "IQ2_XS 40.22" in table[2]
    assert "| 3 / 1 |" in table[2]
    assert table[3].startswith("| b | 2.00 |")
