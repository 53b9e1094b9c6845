"""Tensor names shown to a person: in natural order, and printable.

Natural order puts ``layers.2`` before ``layers.10``.
Model files list tensors in string order (``blk.1``, ``blk.10``, ``blk.11``, ..., ``blk.2``),
which reads as shuffled to a person following a 30-layer model. Everything llmc lists or
works through in order for a person (a GGUF's tensors while packing, ``inspect``'s rows,
``verify``'s problems) uses this one key, so the orders agree everywhere.

An archive keeps its source's order where that order is part of what comes back (a
safetensors file's own order: ``unpack`` returns the published file byte for byte).

Names come from archives and model files, so they are shown through ``printable``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

T = TypeVar("T")

_DIGITS = re.compile(r"(\d+)")


def natural_key(name: str) -> tuple[Any, ...]:
    """Sort key putting ``layers.2`` before ``layers.10``: digit runs compare as numbers.

    Digit runs sort before text at the same place; the name itself breaks ties (``a01``
    and ``a1`` compare equal as numbers), so the order is total and needs no stable sort.
    """
    parts = tuple((0, int(p), "") if p.isdigit() else (1, 0, p)
                  for p in _DIGITS.split(name) if p)
    return (parts, name)


def natural_sorted(items: Iterable[T], key: Callable[[T], str] | None = None) -> list[T]:
    """``items`` in natural order of their names (``key`` gives an item's name; default:
    the item is the name)."""
    if key is None:
        return sorted(items, key=natural_key)  # type: ignore[arg-type]
    return sorted(items, key=lambda item: natural_key(key(item)))


def printable(value: object) -> str:
    """``value`` as text safe for a terminal: control characters (escape sequences,
    newlines, carriage returns, bidi overrides) are shown as ``\\xNN``/``\\uNNNN``.

    Names come from archives and model directories: printed raw, ``\\x1b[2J`` clears
    the screen and a newline forges a line of output. Rich markup is not interpreted
    where this text is printed (``Text``), so ``x[/]`` is printed as it is.
    """
    s = str(value)
    if s.isprintable():
        return s
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii")
                   if ord(c) < 0x10000 else f"\\U{ord(c):08x}" for c in s)
