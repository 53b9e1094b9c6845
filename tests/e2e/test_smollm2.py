"""SmolLM2-135M (a Q4_1 GGUF) end to end: pack exact, then two ways back to transformers.

Route 1: ``llmc_format.transformers.from_pretrained(archive)`` (no directory written).
Route 2: ``llmc unpack`` -> ``AutoModelForCausalLM.from_pretrained(dir)``.
Both must score the same perplexity, to the last bit, on a short text (the first 512
tokens of the Lee corpus, 256-token windows), and it must be that of the model
transformers loads from the GGUF itself. Slow: ~20 s to pack, ~10 s per load.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def _tools() -> tuple[Any, Any]:
    """``tools.eval_ppl.perplexity`` and ``tools.models.lee_text`` (tools/ is not installed)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from tools.eval_ppl import perplexity
    from tools.models import lee_text

    return perplexity, lee_text


def test_from_archive_and_unpacked_directory_score_the_same(
        smollm_gguf: Path, tmp_path: Path, llmc: Callable[..., Any]) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    from llmc_format.transformers import from_pretrained, load_tokenizer

    perplexity, lee_text = _tools()
    text = lee_text()[:20000]
    archive = tmp_path / "smol.llmc"
    r = llmc("pack", smollm_gguf, "-o", archive, "-q")
    assert r.exit_code == 0, r.output

    direct = from_pretrained(archive)
    assert type(direct) is LlamaForCausalLM
    assert direct.lm_head.weight.data_ptr() == direct.model.embed_tokens.weight.data_ptr()
    tok = load_tokenizer(archive)
    ppl_direct = perplexity(direct, tok, text, max_tokens=512, window=256)
    del direct

    r = llmc("unpack", archive, "-o", tmp_path / "out")
    assert r.exit_code == 0, r.output
    assert "lm_head.weight (= model.embed_tokens.weight)" in r.output
    model = AutoModelForCausalLM.from_pretrained(str(tmp_path / "out"), local_files_only=True)
    dir_tok = AutoTokenizer.from_pretrained(str(tmp_path / "out"), local_files_only=True)
    ppl_dir = perplexity(model.eval(), dir_tok, text, max_tokens=512, window=256)
    del model

    source = AutoModelForCausalLM.from_pretrained(str(smollm_gguf.parent), gguf_file=smollm_gguf.name,
                                                  local_files_only=True)
    ppl_source = perplexity(source.eval(), dir_tok, text, max_tokens=512, window=256)

    assert ppl_direct == ppl_dir == ppl_source, (ppl_direct, ppl_dir, ppl_source)
    assert 5 < ppl_direct < 100  # a working language model (measured 27.92)


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
