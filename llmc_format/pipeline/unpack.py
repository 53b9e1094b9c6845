"""unpack: an archive -> a directory of safetensors shards plus the attachments."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from llmc_format import dtypes
from llmc_format.container.reader import Reader
from llmc_format.pipeline.read import read_tensor


def iter_tensors(reader: Reader, dtype: str | None = None,
                 progress: Callable[[str, int, int], None] | None = None
                 ) -> Iterator[tuple[str, np.ndarray]]:
    """Decode tensors one at a time in archive order (bounded memory)."""
    names = reader.keys()
    for i, name in enumerate(names):
        arr = read_tensor(reader, name)
        if dtype is not None and reader.tensor(name).dtype in dtypes.FLOAT_DTYPES:
            arr = arr.astype(dtypes.to_numpy(dtype))
        yield name, arr
        if progress:
            progress(name, i + 1, len(names))


def unpack(
    path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    dtype: str | None = None,
    shard_size: int | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> Path:
    """Write the archive's tensors as safetensors (sharded if ``shard_size``) and its
    attachments (config, tokenizer...) into ``out_dir``; return ``out_dir``."""
    from llmc_format.io.sinks import write_attachments, write_safetensors

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with Reader(path) as r:
        write_safetensors(iter_tensors(r, dtype, progress), out, shard_size=shard_size)
        write_attachments(((a.name, r.read_attachment(a.name)) for a in r.attachments()), out)
    return out
