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

__version__ = "0.1.0"

__all__ = [
    "ChecksumError", "CodecError", "FormatError", "LlmcError", "SourceError", "VersionError",
    "__version__", "load_file", "pack", "safe_open", "save_file", "unpack", "verify",
]


def __getattr__(name: str) -> Any:
    # Lazy: `import llmc_format` stays cheap (no torch, PyAV or numpy-heavy imports).
    if name in ("safe_open", "load_file", "save_file"):
        from llmc_format import api

        return getattr(api, name)
    if name == "unpack":
        from llmc_format.pipeline.unpack import unpack

        return unpack
    if name == "verify":
        from llmc_format.pipeline.verify import verify

        return verify
    if name == "pack":
        return _pack
    raise AttributeError(name)


def _pack(src: Any, dst: Any, *, codec: str = "exact", qp: int = 37, jobs: int | None = None,
          metadata: dict[str, Any] | None = None, **policy: Any) -> Any:
    """Pack ``src`` (file or model directory) into ``dst``, as ``llmc pack`` does."""
    from llmc_format.pipeline.pack import pack as do_pack
    from llmc_format.pipeline.policy import Policy

    return do_pack(src, dst, policy=Policy(codec=codec, qp=qp, **policy), jobs=jobs,
                   user_metadata=metadata)
