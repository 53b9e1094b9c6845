"""GGUF in, the same GGUF out: a lossless pack keeps every tensor in its ggml type.

The GGUF is written with gguf-py's ``GGUFWriter`` (``make_llama_gguf``, tests/conftest.py):
its tensors in many ggml types (Q4_0 ... Q8_0 quantized by ``gguf.quants.quantize``,
K-quants and IQ4 as raw blocks with sane scales, F16, BF16, F32) and one tensor
transformers drops (``rope_freqs``, kept in the layout record). Gaps and padding:
tests/io/test_gguf_layout.py.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from llmc_format import safe_open
from llmc_format.container.reader import Reader
from llmc_format.pipeline.pack import pack
from llmc_format.pipeline.policy import Policy
from llmc_format.pipeline.unpack import unpack
from llmc_format.pipeline.verify import verify

gguf = pytest.importorskip("gguf")
transformers = pytest.importorskip("transformers")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

HIDDEN, FF, HEADS, KV, LAYERS, VOCAB = 256, 512, 4, 2, 2, 96
LINEAR_TYPES = ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K",
                "Q6_K", "IQ4_NL", "IQ4_XS", "F16", "BF16"]


def mixed_types(name: str, linear: Iterator[str]) -> str:
    """The ggml type of each tensor of the mixed GGUF: linear ones cycle through
    ``LINEAR_TYPES`` (``linear``), the rest as llama.cpp stores them."""
    if name == "token_embd.weight":
        return "Q8_0"
    if name == "output.weight":
        return "Q6_K"
    if name.endswith("ffn_norm.weight"):
        return "F16"
    if "norm" in name or name == "rope_freqs.weight":
        return "F32"
    return next(linear)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory,
          make_llama_gguf: Callable[..., dict[str, str]]) -> tuple[Path, Path, dict[str, str]]:
    d = tmp_path_factory.mktemp("mixed")
    src = d / "mixed.gguf"
    linear = iter(LINEAR_TYPES * 2)
    types = make_llama_gguf(src, lambda n: mixed_types(n, linear), hidden=HIDDEN, ff=FF,
                            heads=HEADS, kv=KV, layers=LAYERS, vocab=VOCAB, name="mixed",
                            tied=False, rope_freqs=True, scale=0.02)
    arc = d / "mixed.llmc"
    pack(src, arc)
    return src, arc, types


def test_types_cover_what_was_asked() -> None:
    assert {"Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q4_K", "Q6_K", "F16", "BF16"} <= \
        set(LINEAR_TYPES)


def test_every_tensor_keeps_its_ggml_type(mixed: tuple[Path, Path, dict[str, str]]) -> None:
    src, arc, types = mixed
    stored_types = []
    with Reader(arc) as r:
        for e in r.index.tensors:
            if e.alias_of is None:
                assert e.pipeline[-1]["id"] == "ggml", e.name
                stored_types.append(e.pipeline[-1]["type"])
        q = r.tensor("model.layers.0.self_attn.q_proj.weight")
        assert q.pipeline[0] == {"id": "rowperm", "heads": HEADS}
        assert r.tensor("model.layers.0.self_attn.k_proj.weight").pipeline[0] == \
            {"id": "rowperm", "heads": KV}
        assert r.tensor("model.layers.0.self_attn.v_proj.weight").pipeline[0]["id"] == "ggml"
    from llmc_format.pipeline.inspect import describe

    d = describe(arc)
    labels = {t["name"]: t["codec"] for t in d["tensors"]}
    assert labels["model.layers.0.self_attn.q_proj.weight"] == \
        f"rowperm+ggml:{types['blk.0.attn_q.weight']}"
    assert d["summary"]["lossy_tensors"] == 0
    from llmc_format.inspect_view import header

    assert "policy:    lossless (every tensor bit-exact)" in header(d)  # not "N lossy (ggml:..)"
    mapped = dict(types)
    mapped.pop("rope_freqs.weight")
    assert sorted(stored_types) == sorted(mapped.values())
    assert arc.stat().st_size <= src.stat().st_size


def test_unpack_gguf_is_byte_identical(mixed: tuple[Path, Path, dict[str, str]],
                                       tmp_path: Path) -> None:
    src, arc, _ = mixed
    res = unpack(arc, tmp_path / "g", format="gguf")
    assert res.files == ["model.gguf"]
    assert _sha(tmp_path / "g" / "model.gguf") == _sha(src)
    assert not any(p.name.startswith(".llmc") for p in (tmp_path / "g").iterdir())


def test_values_equal_transformers_and_verify(mixed: tuple[Path, Path, dict[str, str]],
                                              tmp_path: Path) -> None:
    """Decoded values (own dequantizers + rowperm) are bit-identical to what transformers
    loads from the GGUF, under Hugging Face names; ``verify --against`` agrees."""
    src, arc, _ = mixed
    model = transformers.AutoModelForCausalLM.from_pretrained(
        str(src.parent), gguf_file=src.name, local_files_only=True)
    ref = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    with safe_open(arc, framework="np") as f:
        for name in f.keys():
            got = f.get_tensor(name)
            assert got.astype(np.float32).tobytes() == ref[name].tobytes(), name
        part = f.get_slice("model.layers.0.self_attn.q_proj.weight")[70:130]
        assert part.tobytes() == ref["model.layers.0.self_attn.q_proj.weight"][70:130].tobytes()
    report = verify(arc, against=src)
    assert report.ok, [(t.name, t.problem) for t in report.tensors if not t.ok]
    assert all(t.lossless for t in report.tensors)


def test_dtype_cast_falls_back_to_value_gguf(mixed: tuple[Path, Path, dict[str, str]],
                                             tmp_path: Path) -> None:
    """A cast cannot be the original file: the GGUF is then written from values."""
    src, arc, _ = mixed
    unpack(arc, tmp_path / "g", format="gguf", dtype="fp32")
    out = tmp_path / "g" / "model.gguf"
    assert _sha(out) != _sha(src)
    r = gguf.GGUFReader(str(out))
    assert {t.tensor_type.name for t in r.tensors} == {"F32"}


def test_lossy_pack_keeps_exact_tensors_in_source_encoding(
        mixed: tuple[Path, Path, dict[str, str]], tmp_path: Path) -> None:
    """``--codec vvc``: lossy tensors are dequantized and coded; the others (embedding,
    norms) keep their ggml blocks (Q8_0 at ~8.5 bits/weight, not float32)."""
    src, _, _ = mixed
    arc = tmp_path / "lossy.llmc"
    pack(src, arc, policy=Policy(codec="vvc", qp=30, lossy_patterns=("*mlp.up_proj*",)))
    with Reader(arc) as r:
        emb = r.tensor("model.embed_tokens.weight")
        assert emb.pipeline[-1] == {**emb.pipeline[-1], "id": "ggml", "type": "Q8_0"}
        assert emb.stored_bytes * 8 / emb.numel < 8.6
        up = r.tensor("model.layers.0.mlp.up_proj.weight")
        assert up.pipeline[-1]["id"] == "vvc" and up.dtype == "float32"
    res = unpack(arc, tmp_path / "g", format="gguf")  # not the original: written from values
    assert _sha(tmp_path / "g" / res.files[0]) != _sha(src)


def test_cli_summary_ratio_against_input(mixed: tuple[Path, Path, dict[str, str]],
                                         tmp_path: Path) -> None:
    """The pack summary compares with the GGUF the user gave (float32 expansion second)
    and warns only when the archive is larger than its input."""
    from typer.testing import CliRunner

    from llmc_format.cli import app
    from llmc_format.pipeline.inspect import summarize

    src, _, _ = mixed
    arc = tmp_path / "m.llmc"
    r = CliRunner().invoke(app, ["pack", str(src), "-o", str(arc)], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    s = summarize(arc)
    assert s["input_bytes"] == src.stat().st_size
    assert s["input_ratio"] == pytest.approx(src.stat().st_size / arc.stat().st_size)
    assert s["ratio"] > 3 * s["input_ratio"]  # float32 expansion of 4-8 bit weights
    text = " ".join(r.output.split())
    assert f"ratio {s['input_ratio']:.3f} vs the input's" in text
    assert "warning" not in text


def test_cli_warns_when_archive_is_larger(tmp_path: Path) -> None:
    """Random float32 does not compress: header and index make the archive larger."""
    from safetensors.numpy import save_file
    from typer.testing import CliRunner

    from llmc_format.cli import app

    src = tmp_path / "w.safetensors"
    save_file({"w": np.random.default_rng(0).random(64, np.float32)}, str(src))
    r = CliRunner().invoke(app, ["pack", str(src), "-o", str(tmp_path / "w.llmc")],
                           catch_exceptions=False)
    assert r.exit_code == 0
    assert "is larger than its input" in " ".join(r.output.split())


def test_repack_keeps_native_tensors_and_the_layout(
        mixed: tuple[Path, Path, dict[str, str]], tmp_path: Path) -> None:
    """A repack of a lossless GGUF archive keeps the ggml blocks (and the GGUF back)."""
    from llmc_format.io.archive_source import ArchiveSource
    from llmc_format.pipeline.pack import pack_source

    src, arc, _ = mixed
    again = tmp_path / "again.llmc"
    with ArchiveSource(arc) as s:
        pack_source(s, again)
    unpack(again, tmp_path / "g", format="gguf")
    assert _sha(tmp_path / "g" / "model.gguf") == _sha(src)


def test_no_layout_record_when_too_much_would_be_inline(
        mixed: tuple[Path, Path, dict[str, str]], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Tensors the archive cannot hold as blocks are kept in the record only up to a bound
    (else, e.g. for MoE GGUFs loaded whole, every tensor would be stored twice)."""
    from llmc_format.io import gguf_source
    from llmc_format.io.gguf_layout import LAYOUT_ATTACHMENT

    monkeypatch.setattr(gguf_source, "MAX_INLINE_BYTES", 0)  # rope_freqs is inline
    src, _, _ = mixed
    arc = tmp_path / "m.llmc"
    pack(src, arc)
    with Reader(arc) as r:
        assert LAYOUT_ATTACHMENT not in r.attachment_names()
    unpack(arc, tmp_path / "g", format="gguf")
    assert _sha(tmp_path / "g" / "model.gguf") != _sha(src)


def test_verify_against_a_tied_gguf(tmp_path: Path,
                                    make_tiny_gguf: Callable[..., dict[str, str]]) -> None:
    """A tied GGUF has no output.weight: the archive's lm_head alias is checked against the
    embedding it names (it was reported "not in the --against source"), and a different
    GGUF still fails."""
    src, other, arc = tmp_path / "tied.gguf", tmp_path / "other.gguf", tmp_path / "tied.llmc"
    make_tiny_gguf(src, tied=True)
    make_tiny_gguf(other, tied=True, seed=1)
    pack(src, arc)
    report = verify(arc, against=src)
    assert report.ok, [(t.name, t.problem) for t in report.tensors if not t.ok]
    assert "lm_head.weight" in [t.name for t in report.tensors]
    bad = verify(arc, against=other)
    assert not bad.ok
    assert not next(t for t in bad.tensors if t.name == "lm_head.weight").ok
