"""spec/ggml-grids.txt (FORMAT.md §7.6) holds the grids llmc's reader decodes IQ types with."""

from __future__ import annotations

import numpy as np
import pytest

from tools.make_ggml_grids import OUT, TABLES, read_grids, render


def test_grids_file_equals_gguf_quants_grids() -> None:
    """Each table, read by the rules in the file's header, is the grid ``gguf.quants``
    decodes with (the values in llmc's digests of IQ tensors)."""
    quants = pytest.importorskip("gguf.quants")
    tables = read_grids(OUT.read_text())
    assert set(tables) == set(TABLES)
    for name, (entries, width, cls_name) in TABLES.items():
        cls = getattr(quants, cls_name)
        cls.init_grid()
        assert tables[name].shape == (entries, width)
        assert np.array_equal(np.asarray(cls.grid).reshape(entries, width), tables[name]), name


def test_render_round_trips_the_file() -> None:
    """The file is exactly what the tool writes from its own tables (nothing hand-edited)."""
    text = OUT.read_text()
    raw: dict[str, list[int]] = {}
    for line in text.splitlines():
        if line.startswith("table "):
            current = raw.setdefault(line.split()[1], [])
        elif line.startswith("0x"):
            current.append(int(line, 16))
    header = text.split("\ntable ")[0]
    version = header.split("ggml-common.h of ggml ")[1].split()[0]
    commit = header.split("commit ")[1].split(")")[0]
    assert render(raw, version, commit) == text
