"""Load a transformers model and tokenizer straight from a ``.llmc`` archive.

    from llmc_format.transformers import from_pretrained, load_tokenizer
    model = from_pretrained("smollm2.llmc")            # LlamaForCausalLM, weights decoded from the archive
    tokenizer = load_tokenizer("smollm2.llmc")

No model directory is written. The config comes from the archive's ``config.json``
attachment; the weights are handed to transformers' own ``from_pretrained(None,
config=..., state_dict=...)`` as *lazy* tensors: transformers materializes a checkpoint
tensor by indexing it with ``[...]`` (that is how it reads safetensors slices), so each
tensor is decoded only when transformers loads it, on transformers' loader threads. All
of transformers' loading logic (dtype, device_map, weight renaming, tying, buffers) then
applies unchanged.

Tokenizers can only be loaded from files: ``load_tokenizer`` writes the archive's
attachments into a temporary directory, loads from it, and deletes it. Nothing of the
archive is ever run: ``config.json`` is parsed as JSON and built by the config class
transformers ships for its ``model_type`` (``io.hfconfig``; ``auto_map`` is dropped), and
every loader gets ``trust_remote_code=False`` (no custom code, no "run it? [y/N]" prompt).

Tied weights: an archive stores a tied tensor once and records the other name as an
alias. ``retied_aliases`` asks transformers which of those it re-ties itself from the
config (``tie_word_embeddings``...): those are left out of the state dict (as
``save_pretrained`` leaves them out of checkpoints); any other alias is passed as its
own tensor. ``llmc unpack`` uses the same test to decide what to write.

transformers is an optional dependency (``pip install llmc-format[hf]``); this module
imports it only when a function is called.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from llmc_format.container.layout import is_internal_attachment
from llmc_format.container.reader import Reader
from llmc_format.errors import SourceError

CONFIG_NAME = "config.json"


def _transformers() -> Any:
    try:
        import transformers
    except ImportError as exc:
        raise SourceError(f"loading models needs the 'transformers' package ({exc})") from None
    return transformers


@contextlib.contextmanager
def _open(archive: str | os.PathLike[str] | Reader) -> Iterator[Reader]:
    """A reader for ``archive``: the given one (left open), or one opened and closed here."""
    if isinstance(archive, Reader):
        yield archive
        return
    with Reader(archive) as reader:
        yield reader


@contextlib.contextmanager
def attachments_dir(archive: str | os.PathLike[str] | Reader) -> Iterator[Path]:
    """A temporary directory holding the archive's attachments (config, tokenizer...).

    For loaders that only read files (``AutoTokenizer``); deleted on exit.
    """
    from llmc_format.io.sinks import write_attachments

    with _open(archive) as reader, tempfile.TemporaryDirectory(prefix="llmc-attach-") as tmp:
        write_attachments(((a.name, reader.read_attachment(a.name)) for a in reader.attachments()
                           if not is_internal_attachment(a.name)), tmp)
        yield Path(tmp)


def load_config(archive: str | os.PathLike[str] | Reader, **kwargs: Any) -> Any:
    """The transformers config of the archive's ``config.json`` attachment.

    Parsed as plain JSON and built by the class transformers ships for its ``model_type``
    (``io.hfconfig``): an ``auto_map`` pointing at custom code is dropped, never imported.
    ``kwargs`` override config attributes; ``trust_remote_code=True`` is refused.
    """
    from llmc_format.io.hfconfig import build_config

    with _open(archive) as reader:
        if CONFIG_NAME not in reader.attachment_names():
            raise SourceError(f"{reader.path}: the archive has no {CONFIG_NAME} attachment; "
                              f"pack a model directory (or a GGUF file) to get one")
        return build_config(reader.read_attachment(CONFIG_NAME),
                            f"{reader.path}: {CONFIG_NAME}", **kwargs)


def load_tokenizer(archive: str | os.PathLike[str] | Reader, **kwargs: Any) -> Any:
    """``AutoTokenizer`` loaded from the archive's tokenizer attachments (offline).

    transformers reads tokenizers from files only, so the attachments are written to a
    temporary directory for the duration of the call. ``kwargs`` go to
    ``AutoTokenizer.from_pretrained``, always with ``trust_remote_code=False``: a tokenizer
    whose class lives in the archive's own code is refused, never imported.
    """
    from llmc_format.io.hfconfig import NO_REMOTE_CODE

    transformers = _transformers()
    _refuse_remote_code(kwargs)
    with _open(archive) as reader, attachments_dir(reader) as tmp:
        try:
            return transformers.AutoTokenizer.from_pretrained(str(tmp), local_files_only=True,
                                                              **NO_REMOTE_CODE, **kwargs)
        except Exception as exc:
            raise SourceError(f"{reader.path}: no tokenizer transformers can load among the "
                              f"attachments {reader.attachment_names()} ({exc})") from None


def _refuse_remote_code(kwargs: dict[str, Any]) -> None:
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
    transformers = _transformers()
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
    transformers = _transformers()
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
    return _retied(meta_model(config, cls, names), aliases)


def _retied(model: Any, aliases: Mapping[str, str]) -> dict[str, str]:
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
        _transformers()
        retied = retied_aliases(build_config(config_json), aliases, names=names)
    except Exception:  # no transformers, custom code, unknown model type...: decide at unpack
        return None
    return {"retied": sorted(retied), "config_checksum": checksum(config_json),
            "by": f"transformers {_transformers().__version__}"}


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


class ArchiveTensor:
    """A tensor of an open archive, decoded when transformers indexes it (``t[...]``).

    Offers what transformers' loader asks of a checkpoint tensor before materializing it
    (``dtype``, ``shape``, ``is_floating_point``), like a safetensors slice does.
    """

    def __init__(self, reader: Reader, name: str) -> None:
        import torch

        from llmc_format.io.torchconv import torch_dtype_of

        entry = reader.tensor(name)
        self._reader, self.name = reader, name
        self.dtype = torch_dtype_of(entry.dtype)
        self.shape = torch.Size(entry.shape)

    def is_floating_point(self) -> bool:
        return self.dtype.is_floating_point

    def get_shape(self) -> list[int]:
        return list(self.shape)

    def materialize(self) -> Any:
        """The decoded tensor (a CPU torch tensor of the stored dtype)."""
        from llmc_format.decode import read_tensor
        from llmc_format.io.torchconv import to_torch

        return to_torch(read_tensor(self._reader, self.name))

    def __getitem__(self, index: Any) -> Any:
        tensor = self.materialize()
        return tensor if index is Ellipsis or index == () else tensor[index]

    def __repr__(self) -> str:
        return f"ArchiveTensor({self.name!r}, {self.dtype}, {list(self.shape)})"


def lazy_state_dict(reader: Reader, skip: set[str] | None = None) -> dict[str, ArchiveTensor]:
    """name -> ``ArchiveTensor`` for every tensor of the archive (aliases decode their
    target), minus ``skip``."""
    skip = skip or set()
    return {name: ArchiveTensor(reader, name) for name in reader.keys() if name not in skip}


def from_pretrained(archive: str | os.PathLike[str], model_cls: Any = None, *,
                    config: Any = None, verify_checksums: bool = True, **kwargs: Any) -> Any:
    """Build a transformers model from an archive, as ``from_pretrained`` would from its
    unpacked directory, without writing one.

    ``model_cls``: a class (``AutoModelForCausalLM``, ``BertModel``...) or its name; by
    default the config's ``architectures[0]`` (the class that saved the model), else the
    model kind whose parameter names match the archive's (see ``meta_model``). ``config``
    replaces the archive's ``config.json``. Every other keyword
    (``dtype``, ``device_map``, ``attn_implementation``...) goes to transformers'
    ``from_pretrained``. The model is returned in eval mode, as transformers does.
    ``trust_remote_code=True`` is refused: nothing of an archive is ever run.
    """
    _refuse_remote_code(kwargs)
    with Reader(archive, verify_checksums=verify_checksums) as reader:
        if config is None:
            config = load_config(reader)
        # Built on the meta device (no memory) to resolve an Auto class to the concrete one,
        # whose from_pretrained accepts a state dict without a path, and to read its ties.
        meta = meta_model(config, model_cls, reader.keys())
        cls = type(meta)
        dropped = _retied(meta, archive_aliases(reader))
        del meta
        state_dict = lazy_state_dict(reader, set(dropped))
        # transformers decodes every tensor before it returns, so the reader can close after.
        return cls.from_pretrained(None, config=config, state_dict=state_dict, **kwargs)


def config_dict(archive: str | os.PathLike[str] | Reader) -> dict[str, Any] | None:
    """The archive's ``config.json`` as plain data, or None if it has none or it is not a
    JSON object within ``io.hfconfig``'s bounds."""
    from llmc_format.io.hfconfig import config_dict as parse

    with _open(archive) as reader:
        if CONFIG_NAME not in reader.attachment_names():
            return None
        try:
            return parse(reader.read_attachment(CONFIG_NAME))
        except SourceError:
            return None
