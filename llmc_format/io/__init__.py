"""Reading models in (``open_source``) and writing tensors out (``write_safetensors``).

Inputs: a ``.safetensors`` file, a torch state dict (``.pt``/``.pth``/``.bin``, read with
``weights_only=True``), a Hugging Face directory (safetensors shards or
``pytorch_model*.bin``, plus config/tokenizer attachments), or a GGUF file (read as the HF
model transformers builds from it). Every source yields tensors lazily, one at a time.
"""

from typing import Any

from llmc_format.io.base import Source, SourceTensor

#: the earlier name of ``SourceTensor`` (kept: it was public); ``container.index.TensorEntry``
#: is the archive index's entry, a different thing
TensorEntry = SourceTensor

# Lazy: the sinks and torch helpers import torch, which costs seconds at CLI start-up.
_LAZY = {
    "open_source": "llmc_format.io.sources",
    "write_attachments": "llmc_format.io.attachments",
    "write_safetensors": "llmc_format.io.safetensors_sink",
    "from_torch": "llmc_format.io.torchconv",
    "to_torch": "llmc_format.io.torchconv",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(name)


__all__ = [
    "Source",
    "SourceTensor",
    "TensorEntry",
    "from_torch",
    "open_source",
    "to_torch",
    "write_attachments",
    "write_safetensors",
]
