"""GGUF input: the tensors transformers would load from the file, names, layouts and values.

The oracle is transformers itself: ``AutoModelForCausalLM.from_pretrained(dir, gguf_file=...)``.
Fast tests use a tiny llama GGUF written here; the real SmolLM2-135M Q4_1 file is
``slow`` (transformers takes ~25 s to load it).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

from llmc_format.errors import SourceError
from llmc_format.io import open_source, write_attachments, write_safetensors

transformers = pytest.importorskip("transformers")
pytest.importorskip("gguf")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _hf_state(path: Path) -> dict[str, np.ndarray]:
    model = transformers.AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, local_files_only=True
    )
    return {k: v.detach().numpy() for k, v in model.state_dict().items()}


def _ours(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str], dict]:
    with open_source(path) as src:
        tensors = {name: entry() for name, entry in src.tensors()}
        specs = {s.name: (s.dtype, s.shape) for s in src.specs()}
        facts = src.describe()
        aliases = src.aliases()
    assert specs == {n: (str(_name(a.dtype)), a.shape) for n, a in tensors.items()}
    return tensors, aliases, facts


def _name(dt: np.dtype) -> str:
    from llmc_format import dtypes

    return dtypes.name_of(dt)


def _assert_same_as_transformers(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str], dict]:
    ours, aliases, facts = _ours(path)
    ref = _hf_state(path)
    assert set(ours) | set(aliases) == set(ref)
    assert not set(ours) & set(aliases)
    for name, arr in ours.items():
        want = ref[name]
        assert arr.shape == want.shape, name
        # transformers holds everything in float32; exact when widened (f16/bf16 -> f32 is exact)
        assert arr.astype(np.float32).tobytes() == want.tobytes(), name
    for alias, target in aliases.items():
        assert ref[alias].tobytes() == ref[target].tobytes()
    return ours, aliases, facts


def test_tiny_quantized_llama_matches_transformers(tmp_path: Path, make_tiny_gguf) -> None:
    path = tmp_path / "tiny.gguf"
    make_tiny_gguf(path, lin_type="Q4_1", emb_type="Q8_0")
    ours, aliases, facts = _assert_same_as_transformers(path)
    assert aliases == {"lm_head.weight": "model.embed_tokens.weight"}
    assert ours["model.layers.0.self_attn.q_proj.weight"].dtype == np.float32
    assert facts["gguf_tensor_types"] == {"F32": 5, "Q4_1": 14, "Q8_0": 1}
    assert facts["architecture"] == "llama"
    assert facts["hf_model_class"] == "LlamaForCausalLM"


def test_file_is_parsed_once_for_config_and_tokenizer(
    tmp_path: Path, make_tiny_gguf, monkeypatch: pytest.MonkeyPatch
) -> None:
    """transformers would parse the file again for the config and for the tokenizer."""
    import gguf

    path = tmp_path / "tiny.gguf"
    make_tiny_gguf(path, lin_type="Q4_1", emb_type="Q8_0")
    parsed: list[str] = []
    original = gguf.GGUFReader

    def counting(file, *args, **kwargs):
        parsed.append(str(file))
        return original(file, *args, **kwargs)

    monkeypatch.setattr(gguf, "GGUFReader", counting)
    with open_source(path) as src:
        assert gguf.GGUFReader is counting  # the sharing ended with construction
        config = json.loads(dict(src.attachments())["config.json"])
    assert parsed == [str(path)]
    monkeypatch.setattr(gguf, "GGUFReader", original)
    expected = transformers.AutoConfig.from_pretrained(
        str(tmp_path), gguf_file=path.name, local_files_only=True
    )
    assert config["num_hidden_layers"] == expected.num_hidden_layers
    assert config["vocab_size"] == expected.vocab_size


def test_q_and_k_are_unpermuted(tmp_path: Path, make_tiny_gguf) -> None:
    """The raw GGUF q rows are llama.cpp's rope order; ours must differ from them (and
    equal transformers', checked above) — i.e. the un-permutation really ran."""
    import gguf

    path = tmp_path / "tiny.gguf"
    make_tiny_gguf(path, lin_type="F32", emb_type="F32")
    raw = {t.name: np.asarray(t.data) for t in gguf.GGUFReader(str(path)).tensors}
    ours, _, _ = _assert_same_as_transformers(path)
    q = ours["model.layers.1.self_attn.q_proj.weight"]
    assert q.shape == raw["blk.1.attn_q.weight"].shape
    assert not np.array_equal(q, raw["blk.1.attn_q.weight"])
    assert np.array_equal(np.sort(q, axis=None), np.sort(raw["blk.1.attn_q.weight"], axis=None))
    assert np.array_equal(ours["model.layers.1.self_attn.v_proj.weight"], raw["blk.1.attn_v.weight"])


@pytest.mark.parametrize(("type_name", "dtype"), [("F16", np.float16), ("BF16", ml_dtypes.bfloat16)])
def test_half_precision_tensors_pass_through_unconverted(
    tmp_path: Path, make_tiny_gguf, type_name: str, dtype
) -> None:
    path = tmp_path / "half.gguf"
    make_tiny_gguf(path, lin_type=type_name, emb_type=type_name, tied=False)
    ours, aliases, _ = _assert_same_as_transformers(path)
    assert aliases == {}
    assert ours["lm_head.weight"].dtype == np.dtype(dtype)
    assert ours["model.layers.0.mlp.up_proj.weight"].dtype == np.dtype(dtype)
    assert ours["model.norm.weight"].dtype == np.float32


def test_unpacked_directory_loads_in_transformers(tmp_path: Path, make_tiny_gguf) -> None:
    """Tensors + config.json attachment = a directory transformers loads to the same model."""
    path = tmp_path / "tiny.gguf"
    make_tiny_gguf(path)
    out = tmp_path / "unpacked"
    with open_source(path) as src:
        write_safetensors(((n, e()) for n, e in src.tensors()), out)
        items = list(src.attachments())
        write_attachments(items, out)
    config = json.loads(dict(items)["config.json"])
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert config["tie_word_embeddings"] is True
    assert "quantization_config" not in config
    loaded = transformers.AutoModelForCausalLM.from_pretrained(str(out), local_files_only=True)
    ref = _hf_state(path)
    got = {k: v.detach().numpy() for k, v in loaded.state_dict().items()}
    assert got.keys() == ref.keys()
    for k in ref:
        assert got[k].tobytes() == ref[k].tobytes(), k


def _write_tiny_gpt2(path: Path) -> None:
    """GPT-2 GGUF (vocab/context at GPT2Config's defaults: the GGUF config cannot set them)."""
    import gguf

    rng = np.random.default_rng(0)
    d, vocab, ctx = 32, 50257, 1024
    w = gguf.GGUFWriter(str(path), "gpt2")
    w.add_block_count(1)
    w.add_context_length(ctx)
    w.add_embedding_length(d)
    w.add_feed_forward_length(4 * d)
    w.add_head_count(4)
    w.add_layer_norm_eps(1e-5)

    def add(name: str, *shape: int) -> None:
        w.add_tensor(name, rng.standard_normal(shape).astype(np.float32))

    add("token_embd.weight", vocab, d)
    add("position_embd.weight", ctx, d)
    for part, rows, cols in [("attn_qkv", 3 * d, d), ("attn_output", d, d), ("ffn_up", 4 * d, d),
                             ("ffn_down", d, 4 * d)]:
        add(f"blk.0.{part}.weight", rows, cols)
        add(f"blk.0.{part}.bias", rows)
    for norm in ("blk.0.attn_norm", "blk.0.ffn_norm", "output_norm"):
        add(f"{norm}.weight", d)
        add(f"{norm}.bias", d)
    add("output.weight", vocab, d)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_gpt2_goes_through_whole_model_fallback(tmp_path: Path) -> None:
    """GPT-2's processor stashes lm_head across calls: the eager path must still match."""
    path = tmp_path / "gpt2.gguf"
    _write_tiny_gpt2(path)
    ours, aliases, facts = _assert_same_as_transformers(path)
    assert facts["hf_model_class"] == "GPT2LMHeadModel"
    assert "lm_head.weight" in ours and aliases == {}
    # transposed Conv1D layout, as transformers stores it
    assert ours["transformer.h.0.mlp.c_fc.weight"].shape == (32, 128)


def test_unknown_architecture_is_a_source_error(tmp_path: Path) -> None:
    import gguf

    path = tmp_path / "odd.gguf"
    w = gguf.GGUFWriter(str(path), "no-such-arch")
    w.add_tensor("x", np.zeros(4, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(SourceError, match=r"odd\.gguf.*no-such-arch"):
        open_source(path)


@pytest.mark.slow
def test_smollm2_q4_1_matches_transformers(smollm_gguf: Path, tmp_path: Path) -> None:
    ours, aliases, facts = _assert_same_as_transformers(smollm_gguf)
    assert len(ours) == 272
    assert aliases == {"lm_head.weight": "model.embed_tokens.weight"}
    assert facts["gguf_tensor_types"] == {"F32": 61, "Q4_1": 210, "Q8_0": 1}
    assert str(smollm_gguf.parent) not in repr(facts)


@pytest.mark.slow
def test_smollm2_attachments_make_a_loadable_directory(smollm_gguf: Path, tmp_path: Path) -> None:
    out = tmp_path / "unpacked"
    with open_source(smollm_gguf) as src:
        items = dict(src.attachments())
        write_attachments(items.items(), out)
        names = [n for n, _ in src.tensors()][:3]
    assert {"config.json", "tokenizer.json", "tokenizer_config.json"} <= set(items)
    tok = transformers.AutoTokenizer.from_pretrained(str(out), local_files_only=True)
    ref = transformers.AutoTokenizer.from_pretrained(
        str(smollm_gguf.parent), gguf_file=smollm_gguf.name, local_files_only=True
    )
    text = "Hello world! Compressing weights with VVC, 1234."
    assert tok(text)["input_ids"] == ref(text)["input_ids"]
    assert names[0] == "model.embed_tokens.weight"
    assert json.loads(items["config.json"])["num_hidden_layers"] == 30


def test_tensors_come_in_natural_order_and_the_gguf_still_comes_back(
        tmp_path: Path, make_llama_gguf) -> None:
    """A GGUF written in string order (blk.1, blk.10, blk.11, blk.2) is packed in natural
    order — what pack's progress shows — and unpacks to the same file byte for byte."""
    import llmc_format
    from llmc_format.naming import natural_sorted
    from llmc_format.pipeline.unpack import unpack

    path = tmp_path / "twelve.gguf"
    make_llama_gguf(path, lambda name: "F32" if "norm" in name else "Q4_1", layers=12)
    with open_source(path) as src:
        names = [n for n, _ in src.tensors()]
    assert names == natural_sorted(names) and len(names) == 12 * 9 + 2
    layers = [n.split(".")[2] for n in names if n.startswith("model.layers.")]
    assert list(dict.fromkeys(layers)) == [str(i) for i in range(12)]
    shown: list[str] = []
    arc = llmc_format.pack(path, tmp_path / "t.llmc",
                           progress=lambda ev, name, d, t: shown.append(name) if ev == "tensor"
                           else None)
    assert shown == names
    with llmc_format.safe_open(arc) as f:
        assert [n for n in f.keys() if n in set(names)] == names
    res = unpack(arc, tmp_path / "g", format="gguf")
    assert (tmp_path / "g" / res.files[0]).read_bytes() == path.read_bytes()
