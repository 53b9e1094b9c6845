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
