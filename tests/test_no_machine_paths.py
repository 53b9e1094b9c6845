"""Nothing in the repository names a path that exists on one machine only.

A checkout location, a virtualenv, a home directory or a scratch directory under the
system temp dir is true on the machine that wrote it and wrong everywhere else; commands
in docs and tools are written relative to the repository root (``python tools/x.py``),
tests use ``tmp_path`` and code uses package resources or ``tempfile``.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("llmc_format", "tests", "tools", "docs", "spec", "fuzz", "research", ".ci")
SCANNED_FILES = ("README.md", "pyproject.toml")
BINARY_SUFFIXES = {".llmc", ".gguf", ".safetensors", ".pt", ".bin", ".png", ".jpg", ".mp4", ".npy"}

# Built from pieces so this file does not match itself.
_ROOTS = "|".join(["wo" + "rk", "ro" + "ot", "ho" + "me", "Us" + "ers", "mn" + "t", "sr" + "v", "op" + "t"])
PATTERNS = [
    # a checkout, home, mount or add-on directory (work, root, home, Users, mnt, srv, opt) as a path start.
    re.compile(r"(?<![\w.~-])/(?:" + _ROOTS + r")/[\w.~-]"),
    # a real location under the system temp dir (not the bare word "/tmp").
    re.compile(r"(?<![\w.~-])/" + "tm" + r"p/[\w.-]"),
    # an interpreter's install tree, a virtualenv's bin dir named absolutely.
    re.compile(r"/(?:usr/local|usr/lib|usr/share)/"),
    re.compile(r"(?<![\w.-])/[\w./-]*" + "site-" + "packages"),
    re.compile(r"(?<![\w.-])/[\w./-]*" + "ve" + r"nv/bin/"),
    # Windows drive paths.
    re.compile(r"\b[A-Z]:\\" + r"\\?(?:Users|Program)"),
]


def _repo_files() -> list[Path]:
    """Tracked files (a git checkout) or every file under the scanned dirs (an sdist)."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z", "--", *SCANNED, *SCANNED_FILES],
            cwd=ROOT, capture_output=True, check=True,
        ).stdout
        files = [ROOT / p for p in out.decode().split("\0") if p]
        if files:
            return [f for f in files if f.is_file()]
    except (OSError, subprocess.CalledProcessError):
        pass
    found: list[Path] = [ROOT / f for f in SCANNED_FILES if (ROOT / f).is_file()]
    for top in SCANNED:
        for dirpath, dirnames, filenames in os.walk(ROOT / top):
            dirnames[:] = [d for d in dirnames if not d.startswith(".") and d != "__pycache__"]
            found.extend(Path(dirpath) / f for f in filenames)
    return found


def machine_paths(text: str) -> list[str]:
    """Every machine-specific absolute path in ``text``, as the matched fragment."""
    return [m.group(0) for pattern in PATTERNS for m in pattern.finditer(text)]


def test_patterns_catch_machine_paths() -> None:
    bad = ["/" + "work/main/x", "/" + "root/.cache", "/" + "home/u/m.gguf", "cd /" + "tmp/issue8",
           "/x/" + "venv/bin/python", "/a/lib/python3.11/site-" + "packages/m", "/usr/" + "local/bin/x"]
    for text in bad:
        assert machine_paths(text), text
    good = ["python tools/bench_lossy.py", "tmp_path / 'x'", "/usr/bin/env bash", "a/b.llmc",
            "$TMPDIR/synth.safetensors", "../evil", "/abs/path", ".venv/bin/python"]
    for text in good:
        assert not machine_paths(text), text


def test_no_machine_paths_in_repo() -> None:
    files = _repo_files()
    assert any(f.name == "README.md" for f in files)
    hits = []
    for path in files:
        if path.suffix in BINARY_SUFFIXES:
            continue
        data = path.read_bytes()
        if b"\0" in data:
            continue
        for lineno, line in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
            for frag in machine_paths(line):
                hits.append(f"{path.relative_to(ROOT)}:{lineno}: {frag}")
    assert not hits, "machine-specific paths:\n" + "\n".join(hits)
