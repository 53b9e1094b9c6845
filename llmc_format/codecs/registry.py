"""Codec registry: stable id -> codec class.

Ids are written into files and must never change meaning. Built-in codecs are
registered lazily by module path (so importing llmc does not import PyAV or start
FFmpeg); third-party codecs register through the entry-point group
``llmc_format.codecs`` (as numcodecs does) or by calling ``register_codec``.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Any

from llmc_format.codecs.base import ArrayBytesCodec, Codec
from llmc_format.errors import CodecError, UnknownCodecError

#: id -> "module:Class" of the built-in codecs. Ids are forever; see spec/FORMAT.md §7.
_BUILTIN: dict[str, str] = {
    "exact": "llmc_format.codecs.exact:ExactCodec",
    "ggml": "llmc_format.codecs.ggml:GgmlCodec",
    "rowperm": "llmc_format.codecs.rowperm:RowPermCodec",
    "diagscale": "llmc_format.codecs.diagscale:DiagScaleCodec",
    "affine": "llmc_format.quant.affine:AffineCodec",
    "blockdct": "llmc_format.quant.blockdct:BlockDctCodec",
    "vvc": "llmc_format.codecs.video.codecs:VvcCodec",
    "hevc": "llmc_format.codecs.video.codecs:HevcCodec",
    "av1": "llmc_format.codecs.video.codecs:Av1Codec",
    "ffv1": "llmc_format.codecs.video.codecs:Ffv1Codec",
}

#: the entry-point group third-party codecs register under (``[project.entry-points."llmc_format.codecs"]``)
ENTRY_POINT_GROUP = "llmc_format.codecs"

_registry: dict[str, type[Codec]] = {}
_entry_points_loaded = False


def register_codec(cls: type[Codec], codec_id: str | None = None) -> type[Codec]:
    """Register ``cls`` under ``codec_id`` (default ``cls.codec_id``); usable as a decorator."""
    _registry[codec_id or cls.codec_id] = cls
    return cls


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name not in _registry and ep.name not in _BUILTIN:
            try:
                cls = ep.load()
            except Exception as exc:  # a broken plugin is the plugin's error, typed and named
                raise CodecError(f"codec plugin {ep.name!r} ({ep.value}) failed to load: "
                                 f"{type(exc).__name__}: {exc}") from None
            if not (isinstance(cls, type) and issubclass(cls, Codec)):
                raise CodecError(f"codec plugin {ep.name!r} ({ep.value}) is not a Codec class")
            _registry[ep.name] = cls


def get_codec_class(codec_id: str, where: str = "") -> type[Codec]:
    """The class registered under ``codec_id``; ``UnknownCodecError`` if there is none."""
    if not isinstance(codec_id, str):
        raise CodecError(f"codec id must be a string, got {type(codec_id).__name__} ({where})")
    if codec_id in _registry:
        return _registry[codec_id]
    if codec_id in _BUILTIN:
        module, _, attr = _BUILTIN[codec_id].partition(":")
        cls = getattr(importlib.import_module(module), attr)
        _registry[codec_id] = cls
        return cls
    _load_entry_points()
    if codec_id in _registry:
        return _registry[codec_id]
    raise UnknownCodecError(codec_id, where)


def get_codec(config: Any, where: str = "") -> Codec:
    """Instantiate a codec from its stored plain-data config ``{"id": ..., ...}``."""
    if not isinstance(config, dict) or "id" not in config:
        raise CodecError(f"codec config must be a map with an 'id' key, got {config!r:.80} ({where})")
    return get_codec_class(config["id"], where).from_config(config)


def codec_ids() -> list[str]:
    """All ids known now: built-ins plus registered and entry-point codecs."""
    _load_entry_points()
    return sorted(set(_BUILTIN) | set(_registry))


def codec_classes() -> dict[str, type[Codec]]:
    """id -> class of every known codec, in id order (imports the built-ins' modules)."""
    return {codec_id: get_codec_class(codec_id) for codec_id in codec_ids()}


def final_codecs() -> dict[str, type[ArrayBytesCodec]]:
    """Every registered final (array→bytes) stage; the ``selectable`` ones are ``--codec`` choices."""
    return {i: c for i, c in codec_classes().items() if issubclass(c, ArrayBytesCodec)}
