"""Decode a tensor (or a block of its rows) out of an open archive."""

from __future__ import annotations

import numpy as np

from llmc_format.codecs.base import ArraySpec, Rows
from llmc_format.codecs.pipeline import decode_tensor
from llmc_format.container.reader import Reader


def read_tensor(reader: Reader, name: str, rows: Rows | None = None) -> np.ndarray:
    """Decode tensor ``name``; only the blobs covering ``rows`` are read and checked."""
    entry = reader.resolve(name)
    spec = ArraySpec(entry.dtype, entry.shape, name)
    by_stage = [entry.stage_blobs(i) for i in range(len(entry.pipeline))]

    def fetch(stage: int, i: int) -> bytes:
        refs = by_stage[stage]
        if not 0 <= i < len(refs):
            from llmc_format.errors import CodecError

            raise CodecError(f"tensor {name!r}: stage {stage} asked for blob {i} of {len(refs)}")
        return reader.read_blob(refs[i], f"tensor {name!r}")

    return decode_tensor(entry.pipeline, spec, [len(b) for b in by_stage], fetch, rows)
