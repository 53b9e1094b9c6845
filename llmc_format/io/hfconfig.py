"""``config.json`` of a model or an archive, read as data and never as code.

A Hugging Face ``config.json`` may carry ``auto_map``: class paths into ``.py`` files
shipped beside it (or in another Hub repository). transformers' ``AutoConfig`` /
``AutoModel*.from_config`` / ``AutoTokenizer`` import those files when
``trust_remote_code`` is true — or, when it is left unset, *ask* on stdin, so piping
``yes`` into ``llmc unpack`` would run Python an archive brought along. llmc reads configs
from archives and model directories of strangers, so it never goes that way:

- the file is parsed here as plain JSON, bounded in size and nesting depth
  (``plaindata.loads_json``; ``SourceError`` otherwise, never a ``RecursionError``);
- the config object is built from the class transformers registers for its
  ``model_type`` (``CONFIG_MAPPING[model_type].from_dict``), with ``auto_map`` removed,
  so no Auto class can find custom code in it afterwards;
- every transformers loader llmc calls gets ``trust_remote_code=False`` (``NO_REMOTE_CODE``).

A ``model_type`` transformers does not ship is a ``SourceError``: llmc then does without
the config (tied weights are written in full, calibration falls back to ``nmse``...).
"""

from __future__ import annotations

from typing import Any

from llmc_format.errors import SourceError
from llmc_format.plaindata import MAX_DEPTH, loads_json

CONFIG_NAME = "config.json"
#: real configs are a few KB (the largest multimodal ones ~100 KB)
MAX_CONFIG_BYTES = 4 << 20
#: keyword arguments that keep transformers from importing or asking about custom code
NO_REMOTE_CODE: dict[str, Any] = {"trust_remote_code": False}

def load_json(data: bytes, where: str, *, max_bytes: int = MAX_CONFIG_BYTES) -> Any:
    """``data`` parsed as JSON (``plaindata.loads_json``: nesting bounded), or
    ``SourceError`` naming ``where`` (too large, too deep, not UTF-8 JSON)."""
    if len(data) > max_bytes:
        raise SourceError(f"{where}: {len(data)} bytes, over the {max_bytes}-byte limit of a "
                          f"JSON configuration file")
    try:
        return loads_json(data, MAX_DEPTH)
    except ValueError as exc:  # UnicodeDecodeError is a ValueError
        raise SourceError(f"{where}: not valid JSON ({exc})") from None


def config_dict(data: bytes, where: str = CONFIG_NAME) -> dict[str, Any]:
    """``config.json`` as a plain dict (``load_json``), ``SourceError`` if not an object."""
    obj = load_json(data, where)
    if not isinstance(obj, dict):
        raise SourceError(f"{where}: a JSON {type(obj).__name__}, not an object")
    return obj


def build_config(data: bytes | dict[str, Any], where: str = CONFIG_NAME,
                 **overrides: Any) -> Any:
    """The transformers config object of a ``config.json`` (bytes or its parsed dict),
    built by the class registered for its ``model_type``, without ``auto_map``.

    ``overrides`` set attributes, as ``AutoConfig.from_pretrained(**kwargs)`` does;
    ``trust_remote_code`` is refused unless false.
    """
    if overrides.pop("trust_remote_code", False):
        raise SourceError("llmc never runs code from an archive or a model directory: "
                          "trust_remote_code is not supported")
    d = dict(config_dict(data, where) if isinstance(data, bytes) else data)
    d.pop("auto_map", None)  # class paths into custom code: never followed
    model_type = d.get("model_type")
    try:
        from transformers import CONFIG_MAPPING
    except ImportError as exc:
        raise SourceError(f"reading {where} needs the 'transformers' package ({exc})") from None
    if not isinstance(model_type, str) or model_type not in CONFIG_MAPPING:
        raise SourceError(f"{where}: model_type {model_type!r} is not one transformers ships "
                          f"(custom code is never run)")
    try:
        return CONFIG_MAPPING[model_type].from_dict(d, **overrides)
    except Exception as exc:  # transformers validates fields with ValueError/TypeError/...
        raise SourceError(f"{where}: transformers cannot build a {model_type} config "
                          f"({type(exc).__name__}: {exc})") from None
