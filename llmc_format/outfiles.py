"""How llmc creates the files and directories it writes: privately, exclusively, atomically.

Every output (an archive, an unpacked model directory, a shard) is first written under a
*unique* temporary name created exclusively (``O_CREAT | O_EXCL | O_NOFOLLOW``, mode 0600,
through ``tempfile.mkstemp``/``mkdtemp``) beside the destination, so that no other
process — a concurrent llmc, or anyone who planted a symlink at a predictable name — can
share or redirect it; then it is renamed into place in one step. The rules here:

- ``check_output_file``: an existing destination must be a regular file (not a symlink,
  FIFO, directory or device), ``--force`` or not: replacing a link or a device node with a
  regular file is never what was asked;
- ``check_outside_source``: the destination may not be the source or lie inside it;
- ``OutputLock``: an advisory ``flock`` on ``.NAME.lock`` beside the destination, held
  while it is written, so two writers of one destination cannot both succeed (the second
  gets ``OutputError`` at once); the lock file is removed by its holder on release;
- ``check_still_new``: an output that did not exist when the command began must still not
  exist when it is renamed into place (checked under the lock): two packs to one new name
  run one after the other — each past its own "does it exist" check before the other
  finished — would otherwise both succeed, the second silently replacing the first;
- ``output_errors``: an ``OSError`` while writing (disk full, quota, permission, missing
  directory) becomes an ``OutputError`` naming the path — exit code 3, one line.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from llmc_format.errors import LlmcError, OutputError

#: attempts to take a lock whose file its previous holder removed meanwhile
_LOCK_RETRIES = 20

_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISLNK, "a symlink"), (stat.S_ISDIR, "a directory"),
                       (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def _lstat(path: Path) -> os.stat_result | None:
    """``lstat`` of an output path (never followed), None if it does not exist."""
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise OutputError(f"{path}: cannot check the output ({exc.strerror})") from None


def check_output_file(path: Path) -> None:
    """``OutputError`` if ``path`` exists and is anything but a regular file (never
    followed: a symlink is refused, not its target checked)."""
    st = _lstat(path)
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise OutputError(f"{path} is {_kind(st.st_mode)}; llmc only replaces regular files "
                          f"(even with --force)")


def check_still_new(path: Path, new: bool) -> None:
    """``OutputError`` if ``path`` was to be ``new`` (absent when the write began) but
    exists now: another process created it meanwhile, and it is not replaced."""
    if new and _lstat(path) is not None:
        raise OutputError(f"{path} was created by another process while llmc was writing it; "
                          f"it was not replaced (pass --force to overwrite it)")


def check_output_dir(path: Path) -> None:
    """``OutputError`` if ``path`` exists and is not a real directory (a symlink to one is
    refused too: its contents would be replaced wherever it points)."""
    st = _lstat(path)
    if st is not None and not stat.S_ISDIR(st.st_mode):
        what = "a file" if stat.S_ISREG(st.st_mode) else _kind(st.st_mode)
        raise OutputError(f"{path} is {what}, not a directory llmc can write into")


def check_outside_source(output: Path, source: Path) -> None:
    """``OutputError`` if ``output`` is ``source`` or lies inside it (a directory source)."""
    if not os.path.lexists(source):  # an in-memory source
        return
    try:
        src = source.resolve()
        out = output.parent.resolve() / output.name
    except (OSError, RuntimeError):  # a symlink loop: nothing to compare against
        return
    same = out == src
    if not same and out.exists() and source.exists():
        with contextlib.suppress(OSError):
            same = os.path.samefile(out, src)  # a hard link, or another path to it
    if same:
        raise OutputError(f"{output} is the source itself; write the output elsewhere")
    if src.is_dir() and out.is_relative_to(src):
        raise OutputError(f"{output} lies inside the source directory {source}; write the "
                          f"output elsewhere")


@contextlib.contextmanager
def output_errors(path: Path) -> Iterator[None]:
    """Turn an ``OSError`` raised while writing ``path`` into an ``OutputError``."""
    try:
        yield
    except LlmcError:
        raise
    except OSError as exc:
        raise as_output_error(exc, path) from None


def as_output_error(exc: OSError, path: Path) -> OutputError:
    """The ``OutputError`` for ``exc`` met while writing ``path``."""
    where = f" ({exc.filename})" if exc.filename and str(exc.filename) != str(path) else ""
    if exc.errno in _FULL:
        return OutputError(f"{path}: no space left on the device while writing{where} "
                           f"({exc.strerror}); nothing was replaced")
    return OutputError(f"{path}: cannot write{where}: {exc.strerror or exc}")


def temp_file(final: Path, suffix: str) -> tuple[int, Path]:
    """A new empty file ``.NAME.<random>SUFFIX`` beside ``final``, created exclusively
    (0600, never through a symlink); its open descriptor and path."""
    with output_errors(final):
        fd, name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=suffix, dir=final.parent)
    return fd, Path(name)


def temp_dir(final: Path, suffix: str = ".tmp") -> Path:
    """A new private (0700) directory ``.NAME.<random>SUFFIX`` beside ``final``."""
    with output_errors(final):
        return Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=suffix, dir=final.parent))


@contextlib.contextmanager
def atomic_output(path: Path) -> Iterator[BinaryIO]:
    """A binary file to write ``path``'s new content into; on a clean exit it is fsynced,
    given the usual mode (0666 minus the umask) and renamed over ``path`` in one step.

    ``path`` must be absent or a regular file (``check_output_file``); the temporary file
    is created exclusively beside it and removed on any failure, which leaves ``path`` as
    it was. ``OSError`` becomes ``OutputError``.
    """
    check_output_file(path)
    fd, tmp = temp_file(path, ".tmp")
    try:
        with output_errors(path):
            with os.fdopen(fd, "wb") as f:
                yield f
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o666 & ~umask())
            os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def lock_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.lock")


class OutputLock:
    """An exclusive advisory lock on writing ``path`` (``flock`` on ``.NAME.lock``).

    Taken without waiting: a second writer fails at once with ``OutputError``. The holder
    removes the lock file before releasing it; a taker checks that the file it locked is
    still the one at that name (else it was just removed, and it tries again).
    """

    def __init__(self, path: Path) -> None:
        self.path = lock_path(path)
        self._fd: int | None = None
        for _ in range(_LOCK_RETRIES):
            with output_errors(path):
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                             0o600)
            try:
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode):
                    raise OutputError(f"{self.path} is {_kind(st.st_mode)}, not a lock file")
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    raise OutputError(f"{path} is being written by another llmc process "
                                      f"(lock {self.path.name}); wait for it, or write "
                                      f"elsewhere") from None
                try:
                    now = os.stat(self.path, follow_symlinks=False)
                except FileNotFoundError:
                    now = None
                if now is not None and (now.st_ino, now.st_dev) == (st.st_ino, st.st_dev):
                    self._fd = fd
                    return
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)  # the previous holder removed it after we opened it: again
        raise OutputError(f"{path}: could not take the lock {self.path.name}")

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            st, now = os.fstat(self._fd), os.stat(self.path, follow_symlinks=False)
            if (now.st_ino, now.st_dev) == (st.st_ino, st.st_dev):
                os.unlink(self.path)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> OutputLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def umask() -> int:
    """The process umask, read without changing it (``os.umask`` would, for every thread)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable (best effort: not every file system allows it)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
