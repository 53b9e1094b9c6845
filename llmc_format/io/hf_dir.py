"""Reading a Hugging Face model directory: weight shards plus the files that go with them.

Which files hold the weights follows transformers' own precedence: safetensors before
pickles, and an index json (``model.safetensors.index.json``) when present decides the
shard list. Every other non-hidden, non-weight file under the directory (config,
tokenizer, ``1_Pooling/config.json``...) is an *attachment*, stored verbatim so that an
unpacked archive is a directory transformers can load again.

Symlinks: a symlinked file is read only when it resolves inside the model directory, or —
for a Hugging Face hub cache snapshot (``<repo>/snapshots/<revision>/``, all symlinks) —
inside that repository's ``blobs/``. A link pointing anywhere else is refused
(``SourceError``): a directory from a stranger must not pull ``~/.ssh/id_rsa`` into an
archive. Symlinked directories are not descended into.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from llmc_format.errors import SourceError
from llmc_format.io.base import Source, SourceTensor, check_unique, file_facts
from llmc_format.io.safetensors_source import SafetensorsFile
from llmc_format.plaindata import loads_json

#: file name endings that hold weights (in some format): never attachments.
WEIGHT_SUFFIXES = (
    ".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf", ".h5", ".msgpack", ".onnx",
    ".onnx_data", ".ot", ".tflite", ".pb", ".mlmodel", ".npz", ".pkl", ".pickle",
)
#: index files that list weight shards: neither tensors nor attachments.
INDEX_SUFFIXES = (".safetensors.index.json", ".bin.index.json", ".pt.index.json")

_SAFETENSORS_INDEX = "model.safetensors.index.json"
_TORCH_INDEX = "pytorch_model.bin.index.json"


def is_weight_file(rel: str) -> bool:
    low = rel.lower()
    return low.endswith(WEIGHT_SUFFIXES) or low.endswith(INDEX_SUFFIXES)


def _shards_from_index(directory: Path, index_name: str) -> tuple[list[str], dict[str, str]]:
    """(sorted shard file names, tensor name -> shard) from an HF index json."""
    index_path = directory / index_name
    try:
        weight_map = loads_json(index_path.read_text(encoding="utf-8"))["weight_map"]
        if not isinstance(weight_map, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()
        ):
            raise TypeError("weight_map is not a mapping of strings")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SourceError(f"{index_name}: not a valid weight index ({exc})") from None
    shards = sorted(set(weight_map.values()))
    for shard in shards:
        shard_path = (directory / shard).resolve()
        if Path(shard).is_absolute() or ".." in Path(shard).parts:
            raise SourceError(f"{index_name}: shard path {shard!r} leaves the directory")
        if not shard_path.is_file():
            raise SourceError(f"{index_name}: lists shard {shard!r}, which does not exist")
    return shards, weight_map


def find_weight_files(directory: Path) -> tuple[str, list[str], dict[str, str] | None, str | None]:
    """(kind, shard names relative to ``directory``, index weight map or None, index name or None).

    ``kind`` is ``"safetensors"`` or ``"torch"``. ``SourceError`` if there are no weights.
    """
    if (directory / _SAFETENSORS_INDEX).is_file():
        shards, weight_map = _shards_from_index(directory, _SAFETENSORS_INDEX)
        return "safetensors", shards, weight_map, _SAFETENSORS_INDEX
    found = sorted(p.name for p in directory.glob("*.safetensors") if p.is_file())
    if found:
        return "safetensors", found, None, None
    if (directory / _TORCH_INDEX).is_file():
        shards, weight_map = _shards_from_index(directory, _TORCH_INDEX)
        return "torch", shards, weight_map, _TORCH_INDEX
    found = sorted(p.name for p in directory.glob("pytorch_model*.bin") if p.is_file())
    if found:
        return "torch", found, None, None
    raise SourceError(
        f"{directory.name}: directory holds no weights (no *.safetensors, no pytorch_model*.bin)"
    )


def walk_files(directory: Path) -> list[str]:
    """Every non-hidden regular file under ``directory`` as a sorted posix relative path.

    Hidden files and directories (``.git``, ``.cache``) are download/VCS bookkeeping, not
    part of the model. Symlinked files are followed (a Hugging Face cache snapshot is all
    symlinks); symlinked directories are not, so a link loop cannot trap the walk.
    """
    out: list[str] = []
    for root, dirs, files in os.walk(directory, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        rel_root = Path(root).relative_to(directory)
        for name in files:
            if name.startswith("."):
                continue
            full = Path(root) / name
            if full.is_file():  # follows a symlink; drops dangling links, sockets, fifos
                out.append((rel_root / name).as_posix())
    return sorted(out)


def allowed_roots(directory: Path) -> list[Path]:
    """Where files of ``directory`` may resolve to: itself, and for a hub cache snapshot
    (``<repo>/snapshots/<revision>``) the repository's ``blobs/``."""
    root = directory.resolve()
    roots = [root]
    if root.parent.name == "snapshots":
        roots.append(root.parent.parent / "blobs")
    return roots


def check_contained(directory: Path, rel: str, roots: list[Path] | None = None) -> None:
    """``SourceError`` if ``directory/rel`` is (or passes through) a symlink resolving
    outside ``allowed_roots(directory)``."""
    roots = roots or allowed_roots(directory)
    try:
        resolved = (directory / rel).resolve(strict=True)
    except (OSError, RuntimeError) as exc:  # dangling, a loop
        raise SourceError(f"{rel}: cannot resolve it ({exc})") from None
    if not any(resolved.is_relative_to(r) for r in roots):
        raise SourceError(f"{rel} is a symlink to a file outside the model directory; llmc "
                          f"reads only files inside it (copy the file in to include it)")


class HfDirectory(Source):
    """A Hugging Face model directory: one or more weight files plus attachments."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.kind, self.shards, weight_map, self.index_name = find_weight_files(directory)
        roots = allowed_roots(directory)
        for rel in [*self.shards, *([self.index_name] if self.index_name else [])]:
            check_contained(directory, rel, roots)  # before opening anything
        if self.kind == "safetensors":
            opener: type[Source] = SafetensorsFile
        else:  # torch is imported (~0.5 GiB resident, 2 s) only for torch checkpoints
            from llmc_format.io.torch_source import TorchFile as opener
        self._files: list[Source] = []
        try:
            for shard in self.shards:
                self._files.append(opener(directory / shard, display_name=shard))
            self._entries = [pair for f in self._files for pair in f.tensors()]
            check_unique(self._entries)
            self._aliases = {k: v for f in self._files for k, v in f.aliases().items()}
            if weight_map is not None:
                self._check_index(weight_map)
        except BaseException:
            self.close()
            raise
        used = set(self.shards) | ({self.index_name} if self.index_name else set())
        all_files = walk_files(directory)
        self._attachments = [f for f in all_files if not is_weight_file(f)]
        try:
            for rel in self._attachments:
                check_contained(directory, rel, roots)
        except BaseException:
            self.close()
            raise
        #: weight-like files that are neither read nor attached (e.g. onnx exports)
        self.skipped = [f for f in all_files if is_weight_file(f) and f not in used]

    def _check_index(self, weight_map: dict[str, str]) -> None:
        """The index must agree with the shards: a lying index means a broken download."""
        where = {name: entry.file for name, entry in self._entries}
        where.update({alias: where[target] for alias, target in self._aliases.items()})
        for name, shard in weight_map.items():
            if where.get(name) != shard:
                found = f"found in {where[name]}" if name in where else "found in no shard"
                raise SourceError(
                    f"{self.index_name}: maps tensor {name!r} to {shard}, but it is {found}"
                )

    def tensors(self) -> Iterator[tuple[str, SourceTensor]]:
        return iter(list(self._entries))

    def aliases(self) -> dict[str, str]:
        return dict(self._aliases)

    def attachments(self) -> Iterator[tuple[str, bytes]]:
        for rel in self._attachments:
            path = self.path / rel
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise SourceError(f"{rel}: cannot read attachment ({exc})") from None
            yield rel, data

    def attachment_names(self) -> list[str]:
        """The relative paths ``attachments()`` will yield, without reading them."""
        return list(self._attachments)

    def describe(self) -> dict[str, Any]:
        files = []
        for shard in self.shards:
            facts = file_facts(self.path / shard)
            facts["name"] = shard
            files.append(facts)
        out: dict[str, Any] = {
            "format": f"hf-{self.kind}",
            # the name the user gave (a symlink's, not its target's); abspath turns "." into one
            "name": Path(os.path.abspath(self.path)).name,
            "files": files,
            "attachments": list(self._attachments),
        }
        if self.index_name:
            out["index"] = self.index_name
        if self.skipped:
            out["skipped"] = list(self.skipped)
        return out

    def close(self) -> None:
        for f in self._files:
            f.close()
