"""llmc: archive LLM weights in one .llmc file, losslessly or with video codecs.

The public surface, modelled on safetensors::

    import llmc_format
    llmc_format.pack("model_dir", "model.llmc", codec="vvc", qp=37)
    with llmc_format.safe_open("model.llmc", framework="pt") as f:
        w = f.get_tensor("model.layers.0.self_attn.q_proj.weight")
"""

from __future__ import annotations

from typing import Any

from llmc_format.errors import (
    ChecksumError,
    CodecError,
    FormatError,
    LlmcError,
    SourceError,
    VersionError,
)
from llmc_format.version import __version__

__all__ = [
    "ChecksumError", "CodecError", "FormatError", "LlmcError", "SourceError", "VersionError",
    "__version__", "inspect", "load_file", "pack", "safe_open", "save_file", "unpack", "verify",
]


def __getattr__(name: str) -> Any:
    # Lazy: `import llmc_format` stays cheap (no torch, PyAV or numpy-heavy imports).
    if name in ("safe_open", "load_file", "save_file"):
        from llmc_format import api

        return getattr(api, name)
    if name == "unpack":
        from llmc_format.pipeline.unpack import unpack

        return unpack
    if name == "inspect":
        from llmc_format.pipeline.inspect import describe

        return describe
    if name == "verify":
        from llmc_format.pipeline.verify import verify

        return verify
    if name == "pack":
        return _pack
    raise AttributeError(name)


def _pack(src: Any, dst: Any, **options: Any) -> Any:
    """Pack ``src`` (a file or model directory) into ``dst``, as ``llmc pack`` does.

    Options mirror the command's (``codec``, ``qp``, ``bpw``/``size``/``snr``, ``lossy``,
    ``lossless``, ``jobs``, ``metadata``...): see ``llmc_format.api.pack_from``.
    """
    from llmc_format.api import pack_from
    from llmc_format.io import open_source

    with open_source(src) as source:
        return pack_from(source, dst, **options)
