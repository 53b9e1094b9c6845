"""tools/index_budget.py: the worst index the container budget lets through costs less at
16 bytes per container than at 8, and that budget is the one the reader enforces."""

from __future__ import annotations

import msgpack
import pytest

from llmc_format.container import index, layout
from llmc_format.errors import LimitError
from tools import index_budget


@pytest.mark.slow  # tracemalloc over ~900k maps: ~1 min on a loaded machine
def test_the_worst_index_costs_less_at_16_than_at_8() -> None:
    size8, maps8, peak8 = index_budget.worst_case(8)
    size16, maps16, peak16 = index_budget.worst_case(16)
    assert size8 == size16 and maps16 < maps8
    assert peak16 < 0.75 * peak8
    assert layout.INDEX_BYTES_PER_CONTAINER == 16  # worst_case restores the setting


def test_the_reader_enforces_that_budget() -> None:
    per, slack, n = layout.INDEX_BYTES_PER_CONTAINER, layout.INDEX_CONTAINER_SLACK, 1 << 20
    for k in (n // per + slack - 16, int((n / per + slack + 16) * per / (per - 1)) + 1):
        data = msgpack.packb({"pad": b"\0" * n, "junk": [{}] * k})
        within = k + 2 <= len(data) // per + slack  # the maps, the list and the top map
        if within:
            index.unpack_index_bytes(data)
        else:
            with pytest.raises(LimitError, match="msgpack maps and arrays"):
                index.unpack_index_bytes(data)
        assert within == (k < n // per + slack)  # one of each
