"""MiniLM-L6 sentence embeddings with some weights replaced: cosine similarity to float32.

    python -m tools.eval_embed          # the float32 model against itself (1.0) and timing

The measure for a lossy MiniLM (an encoder: no perplexity): all-MiniLM-L6-v2's sentence
embedding (mean of the last hidden states over the tokens, as its ``1_Pooling`` config
says), computed with the float32 weights and with the replaced ones, on a fixed set of
sentences — the first ``SENTENCES`` non-empty lines of ``lee_background.cor``, each cut
to ``MAX_TOKENS`` tokens (the model's ``max_seq_length``) — and the mean over the
sentences of their cosine similarity.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from tools.models import lee_text, minilm_dir

SENTENCES = 64
MAX_TOKENS = 256
_CACHE: dict[str, Any] = {}


def sentences(n: int = SENTENCES) -> list[str]:
    """The first ``n`` non-empty lines of lee_background.cor."""
    return [line.strip() for line in lee_text().splitlines() if line.strip()][:n]


def _model() -> tuple[Any, Any]:
    if "model" not in _CACHE:
        from transformers import AutoModel, AutoTokenizer

        d = str(minilm_dir())
        model = AutoModel.from_pretrained(d, dtype="float32")
        model.eval()
        _CACHE["model"], _CACHE["tokenizer"] = model, AutoTokenizer.from_pretrained(d)
    return _CACHE["model"], _CACHE["tokenizer"]


def embed(overrides: Mapping[str, np.ndarray] | None = None, n: int = SENTENCES) -> np.ndarray:
    """(n, 384) unit-norm sentence embeddings, with parameters ``overrides`` (safetensors
    names of MiniLM's file) replaced for the call and restored afterwards."""
    import torch

    model, tok = _model()
    params = dict(model.named_parameters())
    saved: dict[str, torch.Tensor] = {}
    try:
        with torch.no_grad():
            for name, value in (overrides or {}).items():
                key = name if name in params else name.removeprefix("bert.")
                if key not in params:
                    raise KeyError(f"MiniLM has no parameter {name!r}")
                saved[key] = params[key].detach().clone()
                params[key].copy_(torch.as_tensor(np.asarray(value, dtype=np.float32)))
            batch = tok(sentences(n), padding=True, truncation=True, max_length=MAX_TOKENS,
                        return_tensors="pt")
            hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).float()
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, dim=1).numpy()
    finally:
        with torch.no_grad():
            for key, original in saved.items():
                params[key].copy_(original)


def cosine_to_float32(overrides: Mapping[str, np.ndarray], n: int = SENTENCES) -> float:
    """Mean over the sentences of cos(embedding with ``overrides``, float32 embedding)."""
    if "ref" not in _CACHE or _CACHE["ref"].shape[0] != n:
        _CACHE["ref"] = embed(None, n)
    return float(np.mean(np.sum(embed(overrides, n) * _CACHE["ref"], axis=1)))


def main() -> None:
    t0 = time.perf_counter()
    ref = embed()
    t1 = time.perf_counter()
    print(f"MiniLM-L6 float32 vs itself: {float(np.mean(np.sum(ref * embed(), axis=1))):.6f} "
          f"({SENTENCES} sentences, {t1 - t0:.1f} s incl. load)")


if __name__ == "__main__":
    main()
