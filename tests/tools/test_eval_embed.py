"""MiniLM sentence-embedding similarity: 1 for the float32 weights, lower for noisy ones."""

from __future__ import annotations

import numpy as np
from safetensors.numpy import load_file

from tools.eval_embed import cosine_to_float32, embed, sentences
from tools.models import minilm_dir


def test_cosine_is_one_for_the_original_and_falls_with_noise() -> None:
    assert len(sentences(4)) == 4 and all(sentences(4))
    name = "encoder.layer.0.attention.self.query.weight"
    w = load_file(str(minilm_dir() / "model.safetensors"))[name]
    assert cosine_to_float32({name: w}, n=4) > 0.999999
    rng = np.random.default_rng(0)
    noisy = {name: w + rng.standard_normal(w.shape).astype(np.float32) * float(w.std()) * 3}
    c = cosine_to_float32(noisy, n=4)
    assert 0.0 < c < 0.9999
    e = embed(None, n=4)  # restored after the noisy call: the float32 embeddings again
    assert np.allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    assert np.allclose(e, embed({name: w}, n=4), atol=1e-6)
