"""JSON from files is depth-bounded: a ValueError, never a RecursionError (issue 17)."""

from __future__ import annotations

import pytest

from llmc_format.plaindata import MAX_DEPTH, loads_json, too_deep


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 900, 100_000])
def test_deep_json_is_a_value_error(depth: int) -> None:
    with pytest.raises(ValueError, match="nests deeper"):
        loads_json("[" * depth + "]" * depth)


def test_ordinary_json_loads() -> None:
    assert loads_json(b'{"a": [1, {"b": 2}]}') == {"a": [1, {"b": 2}]}
    assert not too_deep({"a": [[[]]]}, 4) and too_deep({"a": [[[]]]}, 3)
