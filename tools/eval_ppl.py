"""Perplexity of SmolLM2-135M on the Lee corpus: the end-to-end quality metric of benchmarks.

Protocol (fixed so numbers stay comparable across methods and runs): tokenize the whole
Lee background corpus, keep the first 8192 tokens, split them into non-overlapping
1024-token windows, score each window independently (no context carried over), and report
exp(mean NLL) over every predicted token. The FP32 source model scores 26.78.

Run as a script to print the FP32 baseline:
    python tools/eval_ppl.py
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

if __package__ in (None, ""):  # run as a script: make `tools` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from llmc_format.errors import SourceError
from tools.models import lee_text, load_smollm2

N_THREADS = 2
_CACHE: dict[str, Any] = {}


def perplexity(
    model: torch.nn.Module,
    tokenizer: Any,
    text: str,
    max_tokens: int = 8192,
    window: int = 1024,
) -> float:
    """exp(mean token NLL) over the first ``max_tokens`` tokens in independent windows.

    A trailing partial window is scored too (it never occurs with the defaults on Lee).
    """
    torch.set_num_threads(N_THREADS)
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"][0]
    ids = ids[:max_tokens]
    total_nll = 0.0
    total_count = 0
    with torch.inference_mode():
        for start in range(0, len(ids), window):
            chunk = ids[start : start + window].unsqueeze(0)
            if chunk.shape[1] < 2:
                break
            logits = model(chunk).logits[0, :-1].float()
            nll = torch.nn.functional.cross_entropy(logits, chunk[0, 1:], reduction="sum")
            total_nll += float(nll)
            total_count += chunk.shape[1] - 1
    return math.exp(total_nll / total_count)


def cached_smollm2() -> tuple[torch.nn.Module, Any]:
    """The fp32 SmolLM2 model and tokenizer, loaded once per process (the load takes ~20 s)."""
    if "model" not in _CACHE:
        _CACHE["model"], _CACHE["tokenizer"] = load_smollm2()
    return _CACHE["model"], _CACHE["tokenizer"]


def perplexity_with_weights(
    state_dict_overrides: Mapping[str, np.ndarray | torch.Tensor],
    max_tokens: int = 8192,
    window: int = 1024,
) -> float:
    """Perplexity of SmolLM2 with some parameters replaced (e.g. by a codec's reconstruction).

    Reuses the cached fp32 model and restores the original tensors afterwards, so calls are
    independent of each other and no reload is paid per measurement.
    """
    model, tokenizer = cached_smollm2()
    params = dict(model.named_parameters())
    saved: dict[str, torch.Tensor] = {}
    try:
        with torch.no_grad():
            for name, value in state_dict_overrides.items():
                if name not in params:
                    raise SourceError(f"SmolLM2 has no parameter {name!r} to override")
                target = params[name]
                new = torch.as_tensor(np.asarray(value) if not torch.is_tensor(value) else value)
                if tuple(new.shape) != tuple(target.shape):
                    raise SourceError(
                        f"override for {name!r} has shape {tuple(new.shape)}, "
                        f"expected {tuple(target.shape)}"
                    )
                saved[name] = target.detach().clone()
                target.copy_(new.to(target.dtype))
        return perplexity(model, tokenizer, _lee_cached(), max_tokens=max_tokens, window=window)
    finally:
        with torch.no_grad():
            for name, original in saved.items():
                params[name].copy_(original)


def _lee_cached() -> str:
    if "lee" not in _CACHE:
        _CACHE["lee"] = lee_text()
    return _CACHE["lee"]


def main() -> None:
    """Print the FP32 baseline perplexity and how long loading and scoring took."""
    t0 = time.perf_counter()
    model, tokenizer = cached_smollm2()
    t1 = time.perf_counter()
    ppl = perplexity(model, tokenizer, _lee_cached())
    t2 = time.perf_counter()
    print(f"SmolLM2-135M fp32 perplexity (Lee, 8192 tokens, 1024 windows): {ppl:.4f}")
    print(f"load {t1 - t0:.1f} s, evaluate {t2 - t1:.1f} s ({N_THREADS} threads)")


if __name__ == "__main__":
    main()
