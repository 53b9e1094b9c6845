"""What the index container budget allows at worst: peak memory to decode an index made of
as many empty msgpack maps as ``INDEX_BYTES_PER_CONTAINER`` lets through, for 8 and 16
bytes per container, and the density of real archives given on the command line.

    python tools/index_budget.py [ARCHIVE.llmc ...]

The figures are Python allocations traced by ``tracemalloc`` while
``container.index.unpack_index_bytes`` decodes (RSS grows more: the allocator keeps pages).
"""

from __future__ import annotations

import sys
import tracemalloc
from pathlib import Path

import msgpack

if __package__ in (None, ""):  # run as a script: make `llmc_format` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from llmc_format.container import index, layout
from llmc_format.container.reader import Reader

INDEX_BYTES = 4_200_000  # the size of the fuzzer's 300,000-empty-maps finding


def worst_case(per: int) -> tuple[int, int, int]:
    """(index bytes, empty maps, peak traced bytes) at ``per`` index bytes per container."""
    saved = layout.INDEX_BYTES_PER_CONTAINER
    layout.INDEX_BYTES_PER_CONTAINER = per
    try:
        k = INDEX_BYTES // per + layout.INDEX_CONTAINER_SLACK - 10  # just within the budget
        data = msgpack.packb({"metadata": {"junk": [{}] * k},
                              "pad": b"\0" * max(0, INDEX_BYTES - k - 64)})
        tracemalloc.start()
        index.unpack_index_bytes(data)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return len(data), k, peak
    finally:
        layout.INDEX_BYTES_PER_CONTAINER = saved


def density(path: Path) -> tuple[int, int]:
    """(index bytes, maps and arrays) of a real archive."""
    with Reader(path) as r, open(path, "rb") as f:
        f.seek(r.footer.index_offset)
        data = f.read(r.footer.index_length)
    n = 0

    def hook(x: object) -> object:
        nonlocal n
        n += 1
        return x

    msgpack.unpackb(data, object_pairs_hook=lambda p: hook(dict(p)), list_hook=hook,
                    raw=False, strict_map_key=False)
    return len(data), n


def main(argv: list[str]) -> int:
    for per in (8, 16):
        size, k, peak = worst_case(per)
        print(f"1 container per {per:2d} B: a {size / 1e6:.1f} MB index of {k:,} empty maps "
              f"decodes with {peak / 2**20:.0f} MiB traced ({peak / size:.0f}x the index)")
    for p in argv:
        size, n = density(Path(p))
        print(f"{p}: {size:,} index bytes, {n:,} maps and arrays, {size / n:.1f} B each")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
