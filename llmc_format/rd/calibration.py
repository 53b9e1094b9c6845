"""Per-tensor sensitivity from a calibration text: mean squared gradient of the loss.

Radio weighs each weight matrix's distortion by how much the loss reacts to it: to second
order, the expected loss increase from adding independent noise of variance D to the
weights of tensor i is ½·D·Σ_j E[g_j²] (the diagonal Fisher information). So the
allocator minimizes Σ_i s_i·n_i·D_i with s_i the mean of g² over tensor i's weights,
averaged over a few sequences of the calibration text. The model is built with
transformers from the source's own config.json and tokenizer attachments and its tensors
(as float32), so this works for any causal LM transformers can instantiate.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from llmc_format.errors import SourceError
from llmc_format.io.base import Source


def sensitivities(source: Source, text: str, *, sequences: int = 4, seq_len: int = 512,
                  names: set[str] | None = None) -> dict[str, float]:
    """Mean squared gradient of the causal-LM loss per tensor (``names``: which to report)."""
    try:
        import torch
        import transformers
    except ImportError as exc:  # pragma: no cover - both are dependencies of the hf extra
        raise SourceError(f"--calibration needs transformers and torch: {exc}") from None
    from llmc_format.io.torchconv import to_torch

    with tempfile.TemporaryDirectory() as tmp:
        for rel, data in source.attachments():
            p = Path(tmp) / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
        if not (Path(tmp) / "config.json").exists():
            raise SourceError("--calibration needs the model's config.json and tokenizer "
                              "(pack a Hugging Face directory or a GGUF file)")
        try:
            config = transformers.AutoConfig.from_pretrained(tmp)
            tokenizer = transformers.AutoTokenizer.from_pretrained(tmp)
            model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        except Exception as exc:
            raise SourceError(f"--calibration: transformers cannot build this model: {exc}") from None
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, entry in source.tensors():
            if name in params:
                params[name].copy_(to_torch(np.asarray(entry(), dtype=np.float32)))
    model.tie_weights()
    ids = tokenizer(text, return_tensors="pt")["input_ids"][0]
    if ids.numel() < 2:
        raise SourceError("--calibration text is too short")
    starts = np.linspace(0, max(0, ids.numel() - seq_len), sequences).astype(int)
    sums = {n: torch.zeros((), dtype=torch.float64) for n in params}
    model.train(False)
    for s in starts:
        batch = ids[s: s + seq_len][None]
        model.zero_grad(set_to_none=True)
        model(input_ids=batch, labels=batch).loss.backward()
        for n, p in params.items():
            if p.grad is not None:
                sums[n] += p.grad.double().pow(2).mean()
    out = {n: float(v) / len(starts) for n, v in sums.items()}
    return {n: v for n, v in out.items() if names is None or n in names}
