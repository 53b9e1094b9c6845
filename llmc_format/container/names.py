"""Which tensor and attachment names an archive may hold — checked once, at index parse.

An archive's names become file names and keys when it is unpacked: attachments are files
under the output directory, tensors are keys of a safetensors header. A name that is fine
inside the container can still clobber or break what unpack writes, so the reader refuses
(``FormatError``, before anything is decoded or written; ``verify`` reports it) and the
writer never produces:

- tensor names that are not tensors to a loader: ``__metadata__`` (safetensors' header key);
- attachment names that are not a safe relative path on common file systems: absolute,
  ``.``/``..``/empty components, backslashes, NUL or control characters, characters
  Windows forbids (``<>:"|?*``), a component over 255 UTF-8 bytes or ending in a dot or
  space, Windows device names (``CON``, ``NUL``, ``COM1``... with any extension);
- attachment names that collide with what unpack writes beside them: weight files at the
  top level (``*.safetensors``, ``pytorch_model*.bin``, ``*.gguf``, ``*.index.json`` — any
  case) and
  llmc's own staging marker;
- attachment names that collide with each other on disk: the same name up to case (a
  case-insensitive file system holds one of them), or one a directory of another (``a`` and
  ``a/b``).

``path_problem`` is the one path check: ``io.attachments.check_relative_path`` (which every
attachment writer goes through) uses it too.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from llmc_format.errors import FormatError

#: tensor names a checkpoint format reserves
RESERVED_TENSOR_NAMES = frozenset({"__metadata__"})
#: a file in every unpack staging directory (``pipeline.unpack``): never an attachment
STAGE_MARK = ".llmc-unpack-stage"
#: longest file name component most file systems allow (ext4, XFS, btrfs, APFS, NTFS)
MAX_COMPONENT_BYTES = 255

#: top-level attachment names unpack writes weights under (compared case-folded)
_WEIGHT_NAME = re.compile(r".*\.(safetensors|gguf|index\.json)|pytorch_model.*\.bin")
_WINDOWS_DEVICES = frozenset(
    {"con", "prn", "aux", "nul"} | {f"com{i}" for i in range(1, 10)}
    | {f"lpt{i}" for i in range(1, 10)})
_FORBIDDEN = frozenset('\\<>:"|?*')


def path_problem(rel: object) -> str | None:
    """Why ``rel`` is not a safe relative POSIX path for a file (None if it is)."""
    if not isinstance(rel, str) or not rel:
        return "is not a non-empty string"
    if rel.startswith("/"):
        return "is absolute"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in rel):
        return "contains a control character"
    bad = sorted(_FORBIDDEN.intersection(rel))
    if bad:
        return f"contains the forbidden character {bad[0]!r}"
    for part in rel.split("/"):
        if part in ("", ".", ".."):
            return "has an empty, '.' or '..' component"
        try:
            size = len(part.encode("utf-8"))
        except UnicodeEncodeError:  # a lone surrogate
            return "is not valid UTF-8"
        if size > MAX_COMPONENT_BYTES:
            return f"has a component of {size} bytes (file systems allow {MAX_COMPONENT_BYTES})"
        if part[-1] in ". ":
            return "has a component ending in a dot or a space"
        if part.split(".")[0].lower() in _WINDOWS_DEVICES:
            return f"has a component {part!r} that names a Windows device"
    return None


def attachment_problem(name: object) -> str | None:
    """``path_problem``, or a clash with what unpack writes itself."""
    problem = path_problem(name)
    if problem is not None:
        return problem
    assert isinstance(name, str)
    if "/" not in name and _WEIGHT_NAME.fullmatch(name.casefold()):
        return "is the name of a weight file unpack writes"
    if name.split("/")[0] == STAGE_MARK:
        return "is llmc's staging marker"
    return None


def check_tensor_name(name: str) -> None:
    if name in RESERVED_TENSOR_NAMES:
        raise FormatError(f"tensor name {name!r} is reserved by the safetensors format")


def check_attachment_name(name: str) -> None:
    problem = attachment_problem(name)
    if problem is not None:
        raise FormatError(f"attachment name {name!r} {problem}")


class AttachmentNames:
    """A growing set of attachment names, each checked as it is added (``add``)."""

    def __init__(self) -> None:
        self._files: dict[str, str] = {}  # case-folded name -> name
        self._dirs: dict[str, str] = {}  # case-folded directory -> a name under it

    def add(self, name: str) -> None:
        """``FormatError`` if ``name`` is unsafe or clashes with a name added before."""
        check_attachment_name(name)
        key = name.casefold()
        if key in self._files:
            other = self._files[key]
            raise FormatError(f"attachment name {name!r} appears twice" if other == name else
                              f"attachment names {other!r} and {name!r} are the same file "
                              f"on a case-insensitive file system")
        if key in self._dirs:
            raise FormatError(f"attachment {name!r} is a file, but {self._dirs[key]!r} needs "
                              f"a directory of that name")
        parts = key.split("/")
        for i in range(1, len(parts)):
            prefix = "/".join(parts[:i])
            if prefix in self._files:
                raise FormatError(f"attachment {self._files[prefix]!r} is a file, but "
                                  f"{name!r} needs a directory of that name")
            self._dirs.setdefault(prefix, name)
        self._files[key] = name


def check_attachment_set(names: Iterable[str]) -> None:
    """Each name safe (``check_attachment_name``), and no two colliding on a disk."""
    seen = AttachmentNames()
    for name in names:
        seen.add(name)


def check_names(tensors: Iterable[str], attachments: Iterable[str]) -> None:
    """Every rule of this module, for one index; ``FormatError`` at the first breach."""
    for name in tensors:
        check_tensor_name(name)
    check_attachment_set(attachments)
