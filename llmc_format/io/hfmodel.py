"""What transformers makes of an archive's ``config.json``: the config, the model class,
and which tied weights it re-ties by itself — the rules ``llmc pack`` records and
``llmc unpack`` applies, below ``pipeline/`` (``llmc_format.transformers`` is the public
adapter that loads models, built on this).

Nothing of an archive or model directory is executed: ``config.json`` is parsed as JSON
and built by the config class transformers ships (``io.hfconfig``), and every loader gets
``trust_remote_code=False``. Tied weights: an archive stores a tied tensor once and
records the other name as an alias; ``retied_aliases`` asks the model itself, built on the
meta device, which of those transformers re-ties from the config (``tie_word_embeddings``).
transformers is imported only when a function needs it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from typing import Any

from llmc_format.container.reader import Reader
from llmc_format.errors import SourceError

CONFIG_NAME = "config.json"


def import_transformers() -> Any:
    try:
        import transformers
    except ImportError as exc:
        raise SourceError(f"loading models needs the 'transformers' package ({exc})") from None
    return transformers


@contextlib.contextmanager
def open_reader(archive: str | os.PathLike[str] | Reader) -> Iterator[Reader]:
    """A reader for ``archive``: the given one (left open), or one opened and closed here."""
    if isinstance(archive, Reader):
        yield archive
        return
    with Reader(archive) as reader:
        yield reader


def load_config(archive: str | os.PathLike[str] | Reader, **kwargs: Any) -> Any:
    """The transformers config of the archive's ``config.json`` attachment.

    Parsed as plain JSON and built by the class transformers ships for its ``model_type``
    (``io.hfconfig``): an ``auto_map`` pointing at custom code is dropped, never imported.
    ``kwargs`` override config attributes; ``trust_remote_code=True`` is refused.
    """
    from llmc_format.io.hfconfig import build_config

    with open_reader(archive) as reader:
        if CONFIG_NAME not in reader.attachment_names():
            raise SourceError(f"{reader.path}: the archive has no {CONFIG_NAME} attachment; "
                              f"pack a model directory (or a GGUF file) to get one")
        return build_config(reader.read_attachment(CONFIG_NAME),
                            f"{reader.path}: {CONFIG_NAME}", **kwargs)


def refuse_remote_code(kwargs: dict[str, Any]) -> None:
    """Drop ``trust_remote_code`` from ``kwargs``; ``SourceError`` if it asks for code."""
    if kwargs.pop("trust_remote_code", False):
        raise SourceError("llmc never runs code from an archive: trust_remote_code is not "
                          "supported")


#: classes tried, in order, for a config that names no architecture
_FALLBACK_CLASSES = ("AutoModelForCausalLM", "AutoModelForSeq2SeqLM", "AutoModelForMaskedLM",
                     "AutoModel")


def model_class(config: Any, cls: Any = None) -> Any | None:
    """The class to build: ``cls`` (a class or a transformers attribute name), else the
    config's first ``architectures`` entry transformers has; None if neither."""
    transformers = import_transformers()
    if isinstance(cls, str):
        found = getattr(transformers, cls, None)
        if found is None:
            raise SourceError(f"transformers {transformers.__version__} has no class {cls!r}")
        return found
    if cls is not None:
        return cls
    for name in getattr(config, "architectures", None) or []:
        found = getattr(transformers, name, None)
        if found is not None:
            return found
    return None


def meta_model(config: Any, cls: Any = None, names: list[str] | None = None) -> Any:
    """The model to load into, built on the meta device (the module tree, no memory).

    ``cls`` as in ``model_class``. A config naming no architecture (``config.save_pretrained``
    of a bare config) gets the first of causal LM, seq2seq LM, masked LM and base model
    whose parameter names cover most of ``names`` (the archive's tensors): the checkpoint
    says which head it has.
    """
    chosen = model_class(config, cls)
    if chosen is not None:
        return _meta_model(config, chosen)
    transformers = import_transformers()
    best, best_score = None, -1
    for attr in _FALLBACK_CLASSES:
        try:
            model = _meta_model(config, getattr(transformers, attr))
        except Exception:  # this config has no model of that kind
            continue
        score = len(set(names or ()) & set(model.state_dict()))
        if score > best_score:
            best, best_score = model, score
    if best is None:
        raise SourceError(f"transformers has no model class for config type "
                          f"{type(config).__name__}")
    return best


def _meta_model(config: Any, cls: Any) -> Any:
    import torch

    from llmc_format.io.hfconfig import NO_REMOTE_CODE

    with torch.device("meta"):
        if hasattr(cls, "from_config"):  # Auto classes: never custom code, never a prompt
            return cls.from_config(config, **NO_REMOTE_CODE)
        return cls._from_config(config)


def retied_aliases(config: Any, aliases: Mapping[str, str], cls: Any = None,
                   names: list[str] | None = None) -> dict[str, str]:
    """The aliases (alias -> target) transformers re-ties on load, so a checkpoint may omit.

    Asks the model itself (``meta_model``): ``get_expanded_tied_weights_keys``, which
    honours the config (``tie_word_embeddings``) exactly as loading does. Either direction
    counts: loading ties symmetrically. ``names``: all the checkpoint's tensor names (to
    pick the class when the config names none; default: the aliases and their targets).
    """
    if not aliases:
        return {}
    names = names if names is not None else sorted(set(aliases) | set(aliases.values()))
    return retied_of(meta_model(config, cls, names), aliases)


def retied_of(model: Any, aliases: Mapping[str, str]) -> dict[str, str]:
    tied = model.get_expanded_tied_weights_keys(all_submodels=True) if aliases else {}
    return {a: t for a, t in aliases.items() if tied.get(a) == t or tied.get(t) == a}


def retied_record(config_json: bytes, aliases: Mapping[str, str],
                  names: list[str]) -> dict[str, Any] | None:
    """The archive metadata ``tied`` (spec/FORMAT.md §5.2): which aliases transformers
    re-ties from this ``config.json``, decided while packing.

    Unpack then leaves those aliases out without importing transformers and building the
    model (6–10 s of CPU, more than decoding a 135 M-weight VVC archive). None when there
    are no aliases or transformers cannot tell (not installed, unknown architecture).
    """
    from llmc_format.container.layout import checksum
    from llmc_format.io.hfconfig import build_config

    if not aliases:
        return None
    try:
        import_transformers()
        retied = retied_aliases(build_config(config_json), aliases, names=names)
    except Exception:  # no transformers, custom code, unknown model type...: decide at unpack
        return None
    return {"retied": sorted(retied), "config_checksum": checksum(config_json),
            "by": f"transformers {import_transformers().__version__}"}


def recorded_retied(reader: Reader, aliases: Mapping[str, str]) -> dict[str, str] | None:
    """The aliases the archive's ``tied`` record says transformers re-ties, or None when
    there is no usable record (absent, malformed, or written for another config.json)."""
    from llmc_format.container.layout import checksum

    record = reader.metadata.get("tied")
    if not isinstance(record, dict) or CONFIG_NAME not in reader.attachment_names():
        return None
    retied = record.get("retied")
    if not isinstance(retied, list) or not all(isinstance(a, str) for a in retied):
        return None
    if record.get("config_checksum") != checksum(reader.read_attachment(CONFIG_NAME)):
        return None
    return {a: aliases[a] for a in retied if a in aliases}


def archive_aliases(reader: Reader) -> dict[str, str]:
    """alias -> target of every alias entry of the archive."""
    return {t.name: t.alias_of for t in reader.index.tensors if t.alias_of is not None}


def config_dict(archive: str | os.PathLike[str] | Reader) -> dict[str, Any] | None:
    """The archive's ``config.json`` as plain data, or None if it has none or it is not a
    JSON object within ``io.hfconfig``'s bounds."""
    from llmc_format.io.hfconfig import config_dict as parse

    with open_reader(archive) as reader:
        if CONFIG_NAME not in reader.attachment_names():
            return None
        try:
            return parse(reader.read_attachment(CONFIG_NAME))
        except SourceError:
            return None
