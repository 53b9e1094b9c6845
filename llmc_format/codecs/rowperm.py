"""The ``rowperm`` stage: llama.cpp's rope row order <-> Hugging Face's, losslessly.

llama.cpp stores the q and k projections of llama-family models with each head's rows
interleaved for its rope kernel; transformers un-permutes them when it loads a GGUF.
An archive that keeps a GGUF tensor's own blocks (the ``ggml`` codec, in GGUF row order)
still presents Hugging Face's layout to its readers through this stage: decoding
permutes whole rows, which any block type allows (a row is whole blocks).

Normative (spec/FORMAT.md §7.7). Config ``{"id": "rowperm", "heads": H}``.
The tensor has N rows, N = H·2·D for an integer D >= 1. The stage's output (what the
next stage stores) holds row ``h·2D + 2j + i`` where its input (the tensor as readers
see it) holds row ``h·2D + i·D + j`` (h < H, i < 2, j < D): decoding maps stored row
``h·2D + 2j + i`` to row ``h·2D + i·D + j``. In numpy: ``stored.reshape(H, D, 2, -1)
.swapaxes(1, 2).reshape(N, -1)`` is the tensor (transformers' ``reverse_permute``).
Rows [a, b) need the stored rows of the head groups they touch.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from llmc_format.codecs.base import ArrayArrayCodec, ArraySpec, BlobFetcher, Encoded, Rows
from llmc_format.errors import CodecError


def _is_int(x: object) -> bool:
    return isinstance(x, int | np.integer) and not isinstance(x, bool | np.bool_)


def stored_to_rows(stored: np.ndarray, heads: int) -> np.ndarray:
    """The tensor's rows from the stored (llama.cpp-ordered) rows of whole head groups."""
    n = stored.shape[0]
    return stored.reshape(heads, n // heads // 2, 2, -1).swapaxes(1, 2).reshape(stored.shape)


def rows_to_stored(array: np.ndarray, heads: int) -> np.ndarray:
    """Inverse of ``stored_to_rows``."""
    n = array.shape[0]
    return array.reshape(heads, 2, n // heads // 2, -1).swapaxes(1, 2).reshape(array.shape)


class RowPermCodec(ArrayArrayCodec):
    """Interleave/de-interleave the two rope halves of each head's rows (see module doc)."""

    codec_id: ClassVar[str] = "rowperm"
    lossless = True
    required_keys = frozenset({"heads"})

    def __init__(self, heads: int) -> None:
        if not _is_int(heads) or heads < 1:
            raise CodecError(f"rowperm: heads must be a positive int, got {heads!r}")
        super().__init__(heads=int(heads))

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> RowPermCodec:
        unknown = set(config) - {"id", "heads"}
        if unknown or "heads" not in config:
            raise CodecError(f"bad config for codec 'rowperm': {sorted(config)}")
        return cls(config["heads"])

    def _group(self, spec: ArraySpec) -> int:
        n = spec.shape[0] if spec.shape else 0
        h = self.params["heads"]
        if not spec.shape or n % (2 * h) or n == 0:
            raise CodecError(f"tensor {spec.name!r}: rowperm with {h} heads needs a "
                             f"positive multiple of {2 * h} rows, not shape {list(spec.shape)}")
        return n // h

    def resolve(self, spec: ArraySpec) -> ArraySpec:
        self._group(spec)
        return spec

    def encode(self, array: np.ndarray, spec: ArraySpec) -> Encoded:
        self._group(spec)
        stored = rows_to_stored(array, self.params["heads"])
        return Encoded(blobs=[], config=self.get_config(), array=np.ascontiguousarray(stored))

    def input_rows(self, rows: Rows | None, spec: ArraySpec) -> Rows | None:
        if rows is None:
            return None
        g = self._group(spec)
        if rows[0] >= rows[1]:  # an empty range needs nothing (FORMAT.md §7 "Rows")
            return rows
        return rows[0] // g * g, -(-rows[1] // g) * g

    def decode(self, array: np.ndarray, fetch: BlobFetcher, n_blobs: int, spec: ArraySpec,
               rows: Rows | None = None) -> np.ndarray:
        g = self._group(spec)
        if n_blobs:
            raise CodecError(f"tensor {spec.name!r}: rowperm owns no blobs, {n_blobs} stored")
        a, b = (0, spec.shape[0]) if rows is None else rows
        lo = a // g * g
        n = array.shape[0]
        if n % g:
            raise CodecError(f"tensor {spec.name!r}: rowperm got {n} rows, not whole groups")
        if n == 0:  # an empty row range: nothing to permute (and no group to divide by)
            return np.ascontiguousarray(array[:0])
        out = stored_to_rows(array, n // g)
        return np.ascontiguousarray(out[a - lo:b - lo])
