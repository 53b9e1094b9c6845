"""Write spec/ggml-grids.txt, the codebook grids of ggml's IQ types (spec/FORMAT.md §7.6).

    python tools/make_ggml_grids.py GGML_COMMON_H [--check]

``GGML_COMMON_H`` is ``src/ggml-common.h`` of ggml (GitHub ``ggml-org/ggml``; llama.cpp
carries the same file as ``ggml/src/ggml-common.h``). The six grid tables are copied
entry for entry, in ggml's own hexadecimal spelling, so that anyone can diff the spec's
file against the header of any ggml version. When the ``gguf`` package is installed, each
table is also compared with the grid ``gguf.quants`` decodes with (what llmc's reader
uses), and the tool fails on any difference. ``--check`` compares with the existing file
instead of writing it (the file is normative: it never changes once published).
"""

from __future__ import annotations

import argparse
import hashlib
import re
import sys
from pathlib import Path

import numpy as np
import xxhash

OUT = Path(__file__).resolve().parent.parent / "spec" / "ggml-grids.txt"

#: table name in ggml-common.h -> (entries, elements per entry, the gguf.quants class
#: whose grid it is)
TABLES = {
    "iq2xxs_grid": (256, 8, "IQ2_XXS"),
    "iq2xs_grid": (512, 8, "IQ2_XS"),
    "iq2s_grid": (1024, 8, "IQ2_S"),
    "iq3xxs_grid": (256, 4, "IQ3_XXS"),
    "iq3s_grid": (512, 4, "IQ3_S"),
    "iq1s_grid": (2048, 8, "IQ1_S"),
}

HEADER = """\
# ggml codebook grids: normative data of spec/FORMAT.md §7.6 (the IQ types).
# Copied by tools/make_ggml_grids.py from src/ggml-common.h of ggml {version}
# (GitHub ggml-org/ggml, commit {commit}); the same values as the grids of the
# gguf package 0.19.0 (PyPI, gguf/quants.py), checked by the tool.
#
# A table starts with the line "table NAME ENTRIES ELEMENTS" (NAME as in ggml-common.h),
# followed by ENTRIES lines, entry 0 first, each one integer in ggml's hexadecimal spelling
# (0x + 2 * ELEMENTS lowercase hex digits). Element j (0 <= j < ELEMENTS) of an entry is
# byte j of the integer's little-endian encoding, i.e. (entry >> 8j) & 0xff: an unsigned
# byte in every table but iq1s_grid, whose bytes are signed (0xff = -1, 0x00 = 0, 0x01 = 1).
# Lines starting with '#' and empty lines are comments.
"""


def parse_header(text: str) -> dict[str, list[int]]:
    """The six tables of ``ggml-common.h`` (the C implementation's ``iq1s_grid``, the first)."""
    out: dict[str, list[int]] = {}
    for name in TABLES:
        m = re.search(r"GGML_TABLE_BEGIN\(\w+,\s*" + name + r",\s*\w+\)(.*?)GGML_TABLE_END\(\)",
                      text, re.S)
        if m is None:
            raise SystemExit(f"{name} not found")
        out[name] = [int(v, 16) for v in re.findall(r"0x[0-9a-fA-F]+", m.group(1))]
    return out


def elements(name: str, entries: list[int]) -> np.ndarray:
    """The table as an (entries, elements) int array, by the file's rule."""
    n, k, _ = TABLES[name]
    a = np.array([[(e >> (8 * j)) & 0xFF for j in range(k)] for e in entries], np.int64)
    if name == "iq1s_grid":
        a = np.where(a >= 128, a - 256, a)
    assert a.shape == (n, k), name
    return a


def check_gguf(tables: dict[str, list[int]]) -> None:
    try:
        from gguf import quants
    except ImportError:
        print("gguf not installed: grids not compared with gguf.quants", file=sys.stderr)
        return
    for name, (_, _, cls_name) in TABLES.items():
        cls = getattr(quants, cls_name)
        cls.init_grid()
        theirs = np.asarray(cls.grid).reshape(TABLES[name][0], -1).astype(np.int64)
        if not np.array_equal(theirs, elements(name, tables[name])):
            raise SystemExit(f"{name}: gguf.quants.{cls_name}'s grid differs from ggml-common.h")
    print("all six grids equal gguf.quants'", file=sys.stderr)


def render(tables: dict[str, list[int]], version: str, commit: str) -> str:
    lines = [HEADER.format(version=version, commit=commit)]
    for name, (n, k, _) in TABLES.items():
        lines.append(f"table {name} {n} {k}")
        lines.extend(f"0x{e:0{2 * k}x}" for e in tables[name])
        lines.append("")
    return "\n".join(lines)


def digests(text: str) -> None:
    """What FORMAT.md quotes: the file's SHA-256 and each table's XXH3-64."""
    print(f"sha256 {hashlib.sha256(text.encode()).hexdigest()}")
    tables = read_grids(text)
    for name, a in tables.items():
        as_bytes = a.astype(np.int8 if name == "iq1s_grid" else np.uint8).tobytes()
        print(f"{name} xxh3 {xxhash.xxh3_64_hexdigest(as_bytes)}")


def read_grids(text: str) -> dict[str, np.ndarray]:
    """Parse the spec file (the rules in its header) to (entries, elements) int arrays."""
    out: dict[str, np.ndarray] = {}
    name, rows = "", []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        if line.startswith("table "):
            name, rows = line.split()[1], []
            out[name] = rows  # type: ignore[assignment]
        else:
            rows.append(int(line, 16))
    return {k: elements(k, v) for k, v in out.items()}  # type: ignore[arg-type]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("header", type=Path)
    ap.add_argument("--version", default="v0.21.0-2-gd99724f2")
    ap.add_argument("--commit", default="d99724f2b141fed9e1a9f402213506c081433465")
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()
    tables = parse_header(args.header.read_text())
    check_gguf(tables)
    text = render(tables, args.version, args.commit)
    if args.check:
        if OUT.read_text() != text:
            raise SystemExit(f"{OUT} differs from what {args.header} gives")
        print("spec/ggml-grids.txt matches", file=sys.stderr)
    else:
        OUT.write_text(text)
    digests(text)


if __name__ == "__main__":
    main()
