"""Reading a GGUF file as the Hugging Face model transformers would load from it.

A GGUF stores llama.cpp's names (``blk.0.attn_q.weight``), llama.cpp's layouts (q/k rows
permuted for its rope kernel) and often quantized blocks. llmc stores what a transformers
user gets from ``AutoModelForCausalLM.from_pretrained(dir, gguf_file=...)``: HF names, HF
layouts, float values; plus a ``config.json`` and tokenizer files, so an unpacked archive
is a plain HF directory.

How it is done, and why this way:

- data: ``gguf.GGUFReader`` memory-maps the file. Float tensors (F32/F16/BF16) are passed
  through as is (bit-exact); quantized ones (Q4_1, Q8_0, K-quants...) are dequantized to
  float32 by the gguf package's own ``dequantize`` — the same call transformers makes, so
  values are identical to transformers'.
- native storage: each entry also offers its ggml blocks (``NativeData``: pipeline
  ``[rowperm?, ggml]``) when the processor only reorders rows — checked by running it on
  row numbers — so a lossless pack keeps the file's own bytes (2-8x smaller than float32)
  and decodes to exactly these values; ``attachments()`` adds the GGUF layout record
  (``gguf_layout``) from which unpack rebuilds the file byte for byte.
- names and layouts: transformers' own (legacy, per-tensor) GGUF loader pieces:
  ``get_gguf_hf_weights_map`` on a model built on the ``meta`` device (no memory), and the
  architecture's ``TensorProcessor`` (which un-permutes llama q/k). These work one tensor
  at a time, so reading stays lazy. A few processors (MoE experts, GPT-2's output) merge
  or stash tensors across calls; for those architectures we call transformers'
  ``load_gguf_checkpoint`` once and hold the whole (dequantized) model in memory.
- architectures transformers routes through its newer block-keeping GGUF path
  (``integrations.gguf.GGUF_ARCHS``: qwen3.5, lfm2) are refused: their names/layouts come
  from a different mapping we do not reproduce.
- tied weights (e.g. ``lm_head.weight`` = ``model.embed_tokens.weight`` when the GGUF has
  no ``output.weight``) come from the meta model's shared parameters and are reported as
  ``aliases()``; the config says ``tie_word_embeddings`` so loaders re-tie them.

Opening costs a few seconds (transformers import + metadata parse); ``attachments()``
converts the GGUF vocabulary to a fast tokenizer, ~10 s for a 49k vocabulary, once.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import tempfile
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from llmc_format import dtypes
from llmc_format.errors import SourceError
from llmc_format.io.base import NativeData, Source, SourceTensor, check_unique, file_facts
from llmc_format.io.gguf_layout import LAYOUT_ATTACHMENT, layout_record
from llmc_format.io.torchconv import contiguous, dtype_name_of_torch, from_torch
from llmc_format.naming import natural_sorted

#: ggml float/int types stored as plain values -> format dtype name (passed through bit-exactly).
_PLAIN_TYPES = {
    "F32": "float32", "F16": "float16", "BF16": "bfloat16", "F64": "float64",
    "I8": "int8", "I16": "int16", "I32": "int32", "I64": "int64",
}
#: processors that map one GGUF tensor to one HF tensor without touching values.
_LAYOUT_PROCESSORS = {
    "TensorProcessor", "LlamaTensorProcessor", "BloomTensorProcessor", "T5TensorProcessor",
    "Lfm2TensorProcessor",
}
#: one-to-one processors that do arithmetic (``w - 1``, ``log(-w)``): fed float32 so that
#: the result is not rounded to a half type, as transformers' own loader does.
_ARITHMETIC_PROCESSORS = {"NemotronTensorProcessor", "Gemma2TensorProcessor", "MambaTensorProcessor"}
#: (processor, name fragment) whose output gains a unit axis 1 (``np.expand_dims(w, 1)``).
_EXPAND_AXIS1 = {
    ("MambaTensorProcessor", "ssm_conv1d.weight"),
    ("Lfm2TensorProcessor", "shortconv.conv.weight"),
}
#: most bytes of tensors the GGUF layout record keeps itself (not held as ggml blocks by
#: the archive); beyond it no record is written and ``unpack --format gguf`` writes values
MAX_INLINE_BYTES = 64 << 20
#: tokenizer_config.json keys that describe how we loaded it, not the tokenizer
_TOKENIZER_CONFIG_DROP = ("is_local", "local_files_only", "name_or_path")

_PATCH_LOCK = threading.Lock()
_BF16 = dtypes.to_numpy("bfloat16")


def _imports() -> tuple[Any, Any]:
    try:
        import gguf
        import transformers
    except ImportError as exc:  # optional dependencies: pip install llmc-format[hf]
        raise SourceError(
            f"reading GGUF files needs the 'gguf' and 'transformers' packages ({exc})"
        ) from None
    return gguf, transformers


@contextlib.contextmanager
def _cached_tensor_name_map(gguf: Any) -> Iterator[None]:
    """Memoize ``gguf.get_tensor_name_map`` while transformers builds its name map.

    ``get_gguf_hf_weights_map`` rebuilds the (immutable) llama.cpp name table once per
    submodule: ~400 times, 8 s for a 30-layer model. Caching it changes nothing else.
    """
    with _PATCH_LOCK:
        original = gguf.get_tensor_name_map
        gguf.get_tensor_name_map = functools.lru_cache(maxsize=None)(original)
        try:
            yield
        finally:
            gguf.get_tensor_name_map = original


@contextlib.contextmanager
def _shared_reader(gguf: Any, path: Path, reader: Any) -> Iterator[None]:
    """Hand ``reader`` to whoever constructs a ``gguf.GGUFReader`` of ``path`` meanwhile.

    transformers' ``load_gguf_checkpoint`` imports ``GGUFReader`` from the module at call
    time and only reads the fields and tensor list, so sharing our parse changes nothing
    it computes. Other paths still get a fresh reader.
    """
    target = os.path.realpath(path)
    with _PATCH_LOCK:
        original = gguf.GGUFReader

        def reader_for(file: Any, *args: Any, **kwargs: Any) -> Any:
            if not args and not kwargs and os.path.realpath(file) == target:
                return reader
            return original(file, *args, **kwargs)

        gguf.GGUFReader = reader_for
        try:
            yield
        finally:
            gguf.GGUFReader = original


class GgufFile(Source):
    """A GGUF file read as the Hugging Face model transformers builds from it."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        gguf, transformers = _imports()
        self._gguf = gguf
        try:
            self._reader = gguf.GGUFReader(str(path))
        except Exception as exc:  # the reader raises ValueError/struct.error/... on bad files
            raise SourceError(f"{path.name}: not a readable GGUF file ({exc})") from None
        self._data_offset = int(self._reader.data_offset)
        self.architecture = self._field("general.architecture")
        name_field = self._reader.fields.get("general.name")
        self._model_name = _string_value(name_field) if name_field is not None else None
        self._check_supported(transformers)
        # transformers parses the file again for the config and again for the tokenizer
        # (5 s each for SmolLM2's 49k vocabulary); both get our reader instead, and the
        # tokenizer is converted now, while its fields are still parsed.
        with _shared_reader(gguf, path, self._reader):
            self._config = self._load_config(transformers)
            tokenizer = self._tokenizer_files()
        # The vocabulary and merges parsed into fields are ~150 MB of small objects for a
        # 49k vocabulary; nothing needs them any more.
        self._reader.fields = {}
        self._model = self._meta_model(transformers)
        self._processor = self._make_processor()
        self._attachments = sorted({"config.json": self._config_json(), **tokenizer}.items())
        self._eager: dict[str, Any] | None = None
        self._skipped: list[str] = []
        self._gguf_names: dict[str, str] = {}  # archive (HF) name -> GGUF name
        if type(self._processor).__name__ in _LAYOUT_PROCESSORS | _ARITHMETIC_PROCESSORS:
            entries = self._lazy_entries()
        else:
            entries = self._eager_entries()
        # natural order (layers.2 before layers.10): converters write GGUFs in string order,
        # which reads as shuffled in pack's progress and every listing; the GGUF comes back
        # byte for byte from the layout record whatever the archive's order
        self._entries = natural_sorted(entries, key=lambda item: item[0])
        check_unique(self._entries)
        self._aliases = self._tied_aliases()
        self._layout: bytes | None = None

    # -- metadata --------------------------------------------------------------------

    def _field(self, key: str) -> Any:
        field = self._reader.fields.get(key)
        if field is None:
            raise SourceError(f"{self.path.name}: GGUF metadata has no {key!r}")
        return _string_value(field)

    def _check_supported(self, transformers: Any) -> None:
        try:
            from transformers.integrations.gguf import GGUF_ARCHS
        except ImportError:  # older transformers: everything goes through the legacy loader
            GGUF_ARCHS = {}
        if self.architecture in GGUF_ARCHS:
            raise SourceError(
                f"{self.path.name}: GGUF architecture {self.architecture!r} is loaded by "
                f"transformers {transformers.__version__}'s block-keeping GGUF path, which llmc "
                f"does not reproduce; convert it to safetensors first"
            )

    def _load_config(self, transformers: Any) -> Any:
        try:
            config = transformers.AutoConfig.from_pretrained(
                str(self.path.parent), gguf_file=self.path.name, local_files_only=True,
                trust_remote_code=False,  # never code from beside the file, never a prompt
            )
        except Exception as exc:
            raise SourceError(
                f"{self.path.name}: transformers cannot build a config for GGUF architecture "
                f"{self.architecture!r} ({exc})"
            ) from None
        return config

    def _meta_model(self, transformers: Any) -> Any:
        """The model class transformers would instantiate, with no memory behind it."""
        import torch

        candidates: list[Any] = [
            getattr(transformers, name, None) for name in (self._config.architectures or [])
        ]
        candidates += [
            transformers.AutoModelForCausalLM, transformers.AutoModelForSeq2SeqLM,
            transformers.AutoModel,
        ]
        errors = []
        for cls in candidates:
            if cls is None:
                continue
            try:
                with torch.device("meta"):
                    return (cls.from_config if hasattr(cls, "from_config") else cls)(self._config)
            except Exception as exc:
                errors.append(f"{getattr(cls, '__name__', cls)}: {exc}")
        raise SourceError(
            f"{self.path.name}: no transformers model class for {self.architecture!r} "
            f"({'; '.join(errors)[:500]})"
        )

    def _make_processor(self) -> Any:
        from transformers.modeling_gguf_pytorch_utils import TENSOR_PROCESSORS, TensorProcessor

        cls = TENSOR_PROCESSORS.get(self.architecture, TensorProcessor)
        return cls(config=self._config.to_dict())

    def _name_map(self) -> dict[str, str]:
        from transformers.modeling_gguf_pytorch_utils import get_gguf_hf_weights_map

        try:
            with _cached_tensor_name_map(self._gguf):
                return get_gguf_hf_weights_map(self._model, self._processor)
        except Exception as exc:
            raise SourceError(
                f"{self.path.name}: cannot map GGUF tensor names for {self.architecture!r} ({exc})"
            ) from None

    # -- tensors -----------------------------------------------------------------------

    def _lazy_entries(self) -> list[tuple[str, SourceTensor]]:
        name_map = self._name_map()
        proc_name = type(self._processor).__name__
        entries = []
        for tensor in self._reader.tensors:
            hf_name = name_map.get(tensor.name)
            if hf_name is None:  # transformers drops these too (e.g. rope_freqs)
                self._skipped.append(tensor.name)
                continue
            self._gguf_names[hf_name] = tensor.name
            dtype, shape = self._out_spec(tensor, proc_name)
            load = functools.partial(self._load_one, tensor, proc_name, name_map)
            native = self._native(tensor, proc_name, name_map, dtype, shape)
            entries.append((hf_name, SourceTensor(hf_name, dtype, shape, load,
                                                 file=self.path.name, native=native)))
        return entries

    def _native(self, tensor: Any, proc_name: str, name_map: dict[str, str], dtype: str,
                shape: tuple[int, ...]) -> NativeData | None:
        """How to store ``tensor``'s own ggml blocks so that they decode to this entry.

        Possible when llmc knows the ggml type, the values are the type's decoded dtype
        and the processor only reorders rows in a way the ``rowperm`` stage expresses
        (found by running it on row numbers: no guess about what it does).
        """
        from llmc_format.codecs.ggml_types import TYPES

        t = TYPES.get(tensor.tensor_type.name)
        gguf_shape = tuple(int(d) for d in reversed(tensor.shape.tolist()))
        if t is None or proc_name not in _LAYOUT_PROCESSORS or t.dtype != dtype \
                or shape != gguf_shape or not shape or shape[-1] % t.block_size:
            return None
        pipeline: list[dict[str, Any]] = []
        heads = self._row_permutation(tensor, name_map, shape[0])
        if heads is None:
            return None
        if heads:
            pipeline.append({"id": "rowperm", "heads": heads})
        pipeline.append({"id": "ggml", "type": t.name})
        return NativeData(tuple(pipeline), functools.partial(_tensor_bytes, tensor),
                          int(tensor.n_bytes))

    def _row_permutation(self, tensor: Any, name_map: dict[str, str], rows: int) -> int | None:
        """0 if the processor keeps rows in place, H if it is ``rowperm`` with H heads,
        None if it does anything else."""
        from llmc_format.codecs.rowperm import stored_to_rows

        probe = np.arange(rows, dtype=np.float64).reshape(rows, 1)
        try:
            result = self._processor.process(
                weights=probe, name=tensor.name, tensor_key_mapping=name_map,
                parsed_parameters={"tensors": {}, "config": self._processor.config})
            perm = np.asarray(result.weights).reshape(-1)
        except Exception:  # a processor that needs the real shape: not a plain row order
            return None
        if perm.shape != (rows,):
            return None
        if np.array_equal(perm, probe.reshape(-1)):
            return 0
        for heads in range(1, rows // 2 + 1):
            if rows % (2 * heads) == 0 and np.array_equal(stored_to_rows(probe, heads)
                                                          .reshape(-1), perm):
                return heads
        return None

    def _out_spec(self, tensor: Any, proc_name: str) -> tuple[str, tuple[int, ...]]:
        type_name = tensor.tensor_type.name
        shape = tuple(int(d) for d in reversed(tensor.shape.tolist()))
        if any(proc_name == p and frag in tensor.name for p, frag in _EXPAND_AXIS1):
            shape = (shape[0], 1, *shape[1:])
        dtype = _PLAIN_TYPES.get(type_name, "float32")
        if proc_name in _ARITHMETIC_PROCESSORS and dtype in ("float16", "bfloat16"):
            dtype = "float32"
        return dtype, shape

    def _raw(self, tensor: Any) -> np.ndarray:
        """The tensor's values: plain types as stored, quantized ones dequantized to float32.

        Plain tensors are copied out of the read-only memory map so that the caller owns
        (and may modify) what it gets, as with every other source.
        """
        type_name = tensor.tensor_type.name
        data = tensor.data
        if type_name == "BF16":  # the reader exposes bf16 as bytes (numpy has no bf16)
            shape = tuple(int(d) for d in reversed(tensor.shape.tolist()))
            return np.array(data, copy=True).view(np.uint8).view(_BF16).reshape(shape)
        if type_name in _PLAIN_TYPES:
            return np.array(data, copy=True)
        try:
            return self._gguf.dequantize(data, tensor.tensor_type)
        except NotImplementedError:
            raise SourceError(
                f"{self.path.name}: tensor {tensor.name!r} has GGUF type {type_name}, "
                f"which the gguf package cannot dequantize"
            ) from None

    def _load_one(self, tensor: Any, proc_name: str, name_map: dict[str, str]) -> np.ndarray:
        weights = self._raw(tensor)
        half = weights.dtype in (np.dtype(np.float16), _BF16)
        if proc_name in _ARITHMETIC_PROCESSORS and half:
            weights = weights.astype(np.float32)
        result = self._processor.process(
            weights=weights, name=tensor.name, tensor_key_mapping=name_map,
            parsed_parameters={"tensors": {}, "config": self._processor.config},
        )
        if result.name != tensor.name:
            raise SourceError(
                f"{self.path.name}: transformers renamed tensor {tensor.name!r} to "
                f"{result.name!r} while processing it; llmc expects one-to-one processing"
            )
        return contiguous(np.asarray(result.weights))

    def _eager_entries(self) -> list[tuple[str, SourceTensor]]:
        """Whole-model fallback for processors that merge tensors (MoE experts, GPT-2)."""
        from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

        try:
            with _cached_tensor_name_map(self._gguf):
                parsed = load_gguf_checkpoint(
                    str(self.path), return_tensors=True, model_to_load=self._model
                )
        except Exception as exc:
            raise SourceError(f"{self.path.name}: transformers cannot load it ({exc})") from None
        self._eager = dict(parsed["tensors"])
        entries = []
        for name, tensor in self._eager.items():
            dtype = dtype_name_of_torch(tensor.dtype, f"{self.path.name}: tensor {name!r}")
            load = functools.partial(self._eager_get, name)
            entries.append(
                (name, SourceTensor(name, dtype, tuple(tensor.shape), load, file=self.path.name))
            )
        return entries

    def _eager_get(self, name: str) -> np.ndarray:
        if self._eager is None:
            raise SourceError(f"{self.path.name}: source is closed (reading {name!r})")
        return from_torch(self._eager[name])

    def _tied_aliases(self) -> dict[str, str]:
        """Parameters the model shares (tied), not stored in the file under their own name."""
        stored = {name for name, _ in self._entries}
        groups: dict[int, list[str]] = {}
        for name, param in self._model.named_parameters(remove_duplicate=False):
            groups.setdefault(id(param), []).append(name)
        aliases = {}
        for names in groups.values():
            targets = [n for n in names if n in stored]
            if not targets:
                continue
            for n in names:
                if n not in stored:
                    aliases[n] = targets[0]
        return aliases

    def tensors(self) -> Iterator[tuple[str, SourceTensor]]:
        return iter(list(self._entries))

    def aliases(self) -> dict[str, str]:
        return dict(self._aliases)

    # -- attachments -------------------------------------------------------------------

    def attachments(self) -> Iterator[tuple[str, bytes]]:
        """config.json and tokenizer files, plus the GGUF layout record (``gguf_layout``)
        from which unpack rebuilds this very file — unless the tensors the archive cannot
        hold in GGUF form (whose bytes the record keeps) exceed ``MAX_INLINE_BYTES``:
        e.g. an architecture transformers loads whole (MoE experts), where every tensor
        would be stored twice."""
        if self._layout is None:
            names = self._archive_names()
            inline = sum(int(t.n_bytes) for t in self._reader.tensors if t.name not in names)
            self._layout = b"" if inline > MAX_INLINE_BYTES else layout_record(
                self.path, self._reader.tensors, self._data_offset, names)
        extra = [(LAYOUT_ATTACHMENT, self._layout)] if self._layout else []
        return iter(sorted([*self._attachments, *extra]))

    def _archive_names(self) -> dict[str, str]:
        """GGUF tensor name -> archive name, for tensors whose archive entry can hold the
        GGUF bytes (a native entry); the others' bytes go into the layout record."""
        by_gguf: dict[str, str] = {}
        for name, entry in self._entries:
            gguf_name = self._gguf_names.get(name)
            if entry.native is not None and gguf_name is not None:
                by_gguf[gguf_name] = name
        return by_gguf

    def _config_json(self) -> bytes:
        """config.json for the unpacked directory: GGUF metadata as transformers reads it."""
        config = self._config
        config.architectures = [type(self._model).__name__]
        text = config.to_json_string(use_diff=True)
        data = json.loads(text)
        data.pop("quantization_config", None)  # the unpacked weights are plain floats
        data["dtype"] = self._model_dtype()
        return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()

    def _model_dtype(self) -> str:
        """The dtype transformers loads this GGUF in: float32 if anything was dequantized."""
        types = {t.tensor_type.name for t in self._reader.tensors}
        if types - set(_PLAIN_TYPES):
            return "float32"
        if "BF16" in types:
            return "bfloat16"
        if "F16" in types:
            return "float16"
        return "float32"

    def _tokenizer_files(self) -> dict[str, bytes]:
        """Tokenizer files transformers converts from the GGUF vocabulary (offline)."""
        _, transformers = _imports()
        try:
            tok = transformers.AutoTokenizer.from_pretrained(
                str(self.path.parent), gguf_file=self.path.name, local_files_only=True,
                trust_remote_code=False,
            )
        except Exception:  # no tokenizer in the file, or one transformers cannot convert
            return {}
        out: dict[str, bytes] = {}
        with tempfile.TemporaryDirectory(prefix="llmc-tok-") as tmp:
            tok.save_pretrained(tmp)
            for root, _, names in os.walk(tmp):
                for name in names:
                    full = Path(root) / name
                    rel = full.relative_to(tmp).as_posix()
                    out[rel] = full.read_bytes()
        if "tokenizer_config.json" in out:
            cfg = json.loads(out["tokenizer_config.json"])
            for key in _TOKENIZER_CONFIG_DROP:
                cfg.pop(key, None)
            out["tokenizer_config.json"] = (json.dumps(cfg, indent=2, sort_keys=True) + "\n").encode()
        return out

    # -- description -------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        types = Counter(t.tensor_type.name for t in self._reader.tensors)
        out: dict[str, Any] = {
            "format": "gguf",
            "files": [file_facts(self.path)],
            "architecture": self.architecture,
            "gguf_tensor_types": dict(sorted(types.items())),
            "hf_model_class": type(self._model).__name__,
        }
        if self._model_name is not None:
            out["model_name"] = self._model_name
        if self._skipped:
            out["skipped"] = list(self._skipped)
        return out

    def close(self) -> None:
        self._eager = None


def _tensor_bytes(tensor: Any) -> np.ndarray:
    """A GGUF tensor's bytes as stored (its ggml blocks), a read-only view of the map."""
    return np.asarray(tensor.data).reshape(-1).view(np.uint8)


def _string_value(field: Any) -> str:
    """A string metadata field's value (``ReaderField.contents`` is gguf >= 0.11 only)."""
    contents = getattr(field, "contents", None)
    if contents is not None:
        return str(contents())
    return bytes(field.parts[field.data[0]]).decode("utf-8")
