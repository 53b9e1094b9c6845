"""Plain data read from untrusted files (JSON, msgpack maps): bounded nesting.

``json.loads`` of ``[[[[...]]]]`` a hundred thousand levels deep raises ``RecursionError``
(not ``ValueError``, which every caller catches), and data nested a few hundred levels
deep loads but crashes whatever walks it recursively afterwards (``json.dumps``, rich,
``_jsonable``). Files llmc reads (``config.json``, index jsons, safetensors headers,
archive metadata) nest a handful of levels, so they are held to ``MAX_DEPTH``.
"""

from __future__ import annotations

import json
from typing import Any

#: deepest nesting of maps/lists accepted in a JSON file (real configs: ~4)
MAX_DEPTH = 64


def too_deep(value: Any, limit: int) -> bool:
    """True if dicts/lists in ``value`` nest deeper than ``limit`` levels (iterative)."""
    stack = [(value, 0)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, dict):
            children = v.values()
        elif isinstance(v, list):
            children = v
        else:
            continue
        if depth >= limit:
            return True
        stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))
    return False


def loads_json(data: str | bytes, limit: int = MAX_DEPTH) -> Any:
    """``json.loads`` that fails with ``ValueError`` (never ``RecursionError``) on input
    nested deeper than ``limit``, so a caller's ``except ValueError`` covers it."""
    try:
        value = json.loads(data)
    except RecursionError:
        raise ValueError(f"JSON nests deeper than {limit} levels") from None
    if too_deep(value, limit):
        raise ValueError(f"JSON nests deeper than {limit} levels")
    return value
