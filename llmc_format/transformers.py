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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from llmc_format.container.layout import is_internal_attachment
from llmc_format.container.reader import Reader
from llmc_format.errors import SourceError
from llmc_format.io.hfmodel import (  # noqa: F401 - the public names of this module
    CONFIG_NAME,
    archive_aliases,
    config_dict,
    import_transformers,
    load_config,
    meta_model,
    model_class,
    open_reader,
    recorded_retied,
    refuse_remote_code,
    retied_aliases,
    retied_of,
    retied_record,
)


@contextlib.contextmanager
def attachments_dir(archive: str | os.PathLike[str] | Reader) -> Iterator[Path]:
    """A temporary directory holding the archive's attachments (config, tokenizer...).

    For loaders that only read files (``AutoTokenizer``); deleted on exit.
    """
    from llmc_format.io.attachments import write_attachments

    with open_reader(archive) as reader, tempfile.TemporaryDirectory(prefix="llmc-attach-") as tmp:
        write_attachments(((a.name, reader.read_attachment(a.name)) for a in reader.attachments()
                           if not is_internal_attachment(a.name)), tmp)
        yield Path(tmp)


def load_tokenizer(archive: str | os.PathLike[str] | Reader, **kwargs: Any) -> Any:
    """``AutoTokenizer`` loaded from the archive's tokenizer attachments (offline).

    transformers reads tokenizers from files only, so the attachments are written to a
    temporary directory for the duration of the call. ``kwargs`` go to
    ``AutoTokenizer.from_pretrained``, always with ``trust_remote_code=False``: a tokenizer
    whose class lives in the archive's own code is refused, never imported.
    """
    from llmc_format.io.hfconfig import NO_REMOTE_CODE

    transformers = import_transformers()
    refuse_remote_code(kwargs)
    with open_reader(archive) as reader, attachments_dir(reader) as tmp:
        try:
            return transformers.AutoTokenizer.from_pretrained(str(tmp), local_files_only=True,
                                                              **NO_REMOTE_CODE, **kwargs)
        except Exception as exc:
            raise SourceError(f"{reader.path}: no tokenizer transformers can load among the "
                              f"attachments {reader.attachment_names()} ({exc})") from None


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
    refuse_remote_code(kwargs)
    with Reader(archive, verify_checksums=verify_checksums) as reader:
        if config is None:
            config = load_config(reader)
        # Built on the meta device (no memory) to resolve an Auto class to the concrete one,
        # whose from_pretrained accepts a state dict without a path, and to read its ties.
        meta = meta_model(config, model_cls, reader.keys())
        cls = type(meta)
        dropped = retied_of(meta, archive_aliases(reader))
        del meta
        state_dict = lazy_state_dict(reader, set(dropped))
        # transformers decodes every tensor before it returns, so the reader can close after.
        return cls.from_pretrained(None, config=config, state_dict=state_dict, **kwargs)


