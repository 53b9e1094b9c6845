"""Perplexity protocol checked on a tiny real Llama and MiniLM's (offline) tokenizer."""

from __future__ import annotations

import math

import pytest
import torch

from tools.eval_ppl import perplexity
from tools.models import lee_text, minilm_dir


@pytest.fixture(scope="module")
def tokenizer():  # type: ignore[no-untyped-def]
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(minilm_dir()))


def _tiny_llama(vocab_size: int, seed: int = 0) -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=128,
    )
    return LlamaForCausalLM(config).eval()


def test_uniform_model_has_perplexity_equal_to_vocab_size(tokenizer) -> None:  # type: ignore[no-untyped-def]
    model = _tiny_llama(tokenizer.vocab_size)
    with torch.no_grad():
        model.lm_head.weight.zero_()
    ppl = perplexity(model, tokenizer, lee_text()[:5000], max_tokens=96, window=32)
    assert ppl == pytest.approx(tokenizer.vocab_size, rel=1e-4)


def test_windows_are_scored_independently(tokenizer) -> None:  # type: ignore[no-untyped-def]
    model = _tiny_llama(tokenizer.vocab_size, seed=1)
    text = lee_text()[:5000]
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"][0][:64]
    with torch.no_grad():
        losses = [float(model(c[None], labels=c[None]).loss) for c in (ids[:32], ids[32:64])]
    expected = math.exp(sum(losses) / 2)  # equal token counts per window
    assert perplexity(model, tokenizer, text, max_tokens=64, window=32) == pytest.approx(
        expected, rel=1e-5
    )


@pytest.mark.slow
def test_overrides_change_perplexity_and_are_restored() -> None:
    from tools.eval_ppl import cached_smollm2, perplexity_with_weights

    model, _ = cached_smollm2()
    name = "model.layers.0.mlp.down_proj.weight"
    before = dict(model.named_parameters())[name].detach().clone()
    base = perplexity_with_weights({}, max_tokens=512, window=256)
    broken = perplexity_with_weights({name: torch.zeros_like(before).numpy()}, max_tokens=512,
                                     window=256)
    assert broken != pytest.approx(base, rel=1e-3)
    assert torch.equal(dict(model.named_parameters())[name], before)
    assert perplexity_with_weights({}, max_tokens=512, window=256) == pytest.approx(base)
