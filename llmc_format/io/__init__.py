"""Reading models in (``open_source``) and writing tensors out (``write_safetensors``).

Inputs: a ``.safetensors`` file, a torch state dict (``.pt``/``.pth``/``.bin``, read with
``weights_only=True``), a Hugging Face directory (safetensors shards or
``pytorch_model*.bin``, plus config/tokenizer attachments), or a GGUF file (read as the HF
model transformers builds from it). Every source yields tensors lazily, one at a time.
"""

from llmc_format.io.base import Source, TensorEntry
from llmc_format.io.sinks import write_attachments, write_safetensors
from llmc_format.io.sources import open_source
from llmc_format.io.torchconv import from_torch, to_torch

__all__ = [
    "Source",
    "TensorEntry",
    "from_torch",
    "open_source",
    "to_torch",
    "write_attachments",
    "write_safetensors",
]
