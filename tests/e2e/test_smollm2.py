"""SmolLM2-135M (a Q4_1 GGUF) end to end: pack exact, then two ways back to transformers.

Route 1: ``llmc_format.transformers.from_pretrained(archive)`` (no directory written).
Route 2: ``llmc unpack`` -> ``AutoModelForCausalLM.from_pretrained(dir)``.
Both must give the same logits, to the last bit, on a short text (the first 256 tokens
of the Lee corpus), and they must be those of the model transformers loads from the GGUF
itself (and a sane perplexity). Slow: ~20 s to pack, ~10 s per load.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow
#: tokens of the Lee corpus the three models are run on
TOKENS = 256


def _logits(model: Any, ids: Any) -> Any:
    import torch

    with torch.no_grad():
        return model.eval()(ids).logits[0]


def _perplexity(logits: Any, ids: Any) -> float:
    import torch

    return float(torch.exp(torch.nn.functional.cross_entropy(logits[:-1].float(), ids[0, 1:])))


def test_from_archive_and_unpacked_directory_score_the_same(
        smollm_gguf: Path, tmp_path: Path, llmc: Callable[..., Any], lee_text: str) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    from llmc_format.transformers import from_pretrained, load_tokenizer

    archive = tmp_path / "smol.llmc"
    r = llmc("pack", smollm_gguf, "-o", archive, "-q")
    assert r.exit_code == 0, r.output

    direct = from_pretrained(archive)
    assert type(direct) is LlamaForCausalLM
    assert direct.lm_head.weight.data_ptr() == direct.model.embed_tokens.weight.data_ptr()
    tok = load_tokenizer(archive)
    ids = tok(lee_text[:20000], return_tensors="pt").input_ids[:, :TOKENS]
    out_direct = _logits(direct, ids)
    del direct

    r = llmc("unpack", archive, "-o", tmp_path / "out")
    assert r.exit_code == 0, r.output
    assert "lm_head.weight (= model.embed_tokens.weight)" in r.output
    model = AutoModelForCausalLM.from_pretrained(str(tmp_path / "out"), local_files_only=True)
    dir_tok = AutoTokenizer.from_pretrained(str(tmp_path / "out"), local_files_only=True)
    assert dir_tok(lee_text[:20000], return_tensors="pt").input_ids[:, :TOKENS].equal(ids)
    out_dir = _logits(model, ids)
    del model

    source = AutoModelForCausalLM.from_pretrained(str(smollm_gguf.parent), gguf_file=smollm_gguf.name,
                                                  local_files_only=True)
    out_source = _logits(source, ids)

    assert out_direct.equal(out_dir) and out_dir.equal(out_source)  # to the last bit
    ppl_direct = _perplexity(out_direct, ids)
    assert 5 < ppl_direct < 100  # a working language model


def test_gguf_in_same_gguf_out(smollm_gguf: Path, tmp_path: Path,
                               llmc: Callable[..., Any]) -> None:
    """``pack --codec exact`` keeps every tensor in its ggml type: the archive is no larger
    than the GGUF, ``unpack --format gguf`` gives the very file back (SHA-256), and
    transformers loads it with ``gguf_file=``."""
    import hashlib

    from transformers import AutoModelForCausalLM

    from llmc_format.container.reader import Reader

    archive = tmp_path / "smol.llmc"
    r = llmc("pack", smollm_gguf, "-o", archive)
    assert r.exit_code == 0, r.output
    assert "vs the input's" in " ".join(r.output.split())
    assert archive.stat().st_size <= smollm_gguf.stat().st_size
    with Reader(archive) as rd:
        types = {e.pipeline[-1].get("type") for e in rd.index.tensors if e.alias_of is None}
    assert types == {"Q4_1", "Q8_0", "F32"}
    r = llmc("unpack", archive, "-o", tmp_path / "g", "--format", "gguf")
    assert r.exit_code == 0, r.output
    out = tmp_path / "g" / "model.gguf"

    def sha(p: Path) -> str:
        return hashlib.sha256(p.read_bytes()).hexdigest()

    assert sha(out) == sha(smollm_gguf)
    model = AutoModelForCausalLM.from_pretrained(str(out.parent), gguf_file=out.name,
                                                 local_files_only=True)
    assert model.model.embed_tokens.weight.shape == (49152, 576)
