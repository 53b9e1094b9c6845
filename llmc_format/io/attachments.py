"""Writing attachments (config, tokenizer files) out: the one writer, with the path check.

Archives come from strangers: every path is checked (``container.names.path_problem``)
and must stay inside the output directory, also through symlinks already there.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from llmc_format.errors import SourceError
from llmc_format.io.sink_base import atomic_write


def check_relative_path(rel: object) -> PurePosixPath:
    """A safe relative posix path, or ``SourceError`` (``container.names.path_problem``:
    no absolute path, ``..``/``.``/empty parts, control or Windows-forbidden characters,
    overlong components, device names). The one check every attachment writer uses."""
    from llmc_format.container.names import path_problem

    problem = path_problem(rel)
    if problem is not None:
        raise SourceError(f"attachment path {rel!r} {problem}")
    assert isinstance(rel, str)
    return PurePosixPath(rel)


def write_attachments(
    items: Iterable[tuple[str, bytes]], out_dir: str | os.PathLike[str]
) -> list[str]:
    """Write ``(relative posix path, bytes)`` files under ``out_dir``; return the paths written.

    All paths are checked before anything is written. A path is refused (``SourceError``)
    if it is absolute, climbs with ``..``, or would resolve outside ``out_dir`` through a
    symlink already there (a directory link, or a link at the file's own place).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    root = out.resolve()
    checked: list[tuple[PurePosixPath, bytes]] = []
    seen: set[str] = set()
    for rel, data in items:
        path = check_relative_path(rel)
        if not isinstance(data, bytes | bytearray | memoryview):
            raise SourceError(f"attachment {rel!r}: content is {type(data).__name__}, not bytes")
        if str(path) in seen:
            raise SourceError(f"attachment {rel!r} appears twice")
        seen.add(str(path))
        _check_inside(root, out, path)
        checked.append((path, bytes(data)))
    written = []
    for path, data in checked:
        target = out.joinpath(*path.parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        _check_inside(root, out, path)  # a directory created meanwhile cannot redirect it
        atomic_write(target, data)
        written.append(str(path))
    return written


def _check_inside(root: Path, out: Path, path: PurePosixPath) -> None:
    target = out.joinpath(*path.parts)
    if target.is_symlink():
        raise SourceError(f"attachment {str(path)!r}: a symlink is already at that place")
    resolved = target.resolve()
    if not resolved.is_relative_to(root) or resolved == root:
        raise SourceError(f"attachment {str(path)!r} resolves outside the output directory")
