"""The ``pt`` output format: what ``save_pretrained(safe_serialization=False)`` wrote.

``pytorch_model.bin`` (a ``torch.save``'d state dict, loadable with
``torch.load(weights_only=True)``), or ``pytorch_model-0000i-of-0000N.bin`` plus
``pytorch_model.bin.index.json``. One shard is held in memory (``torch.save`` writes a
whole file at once); an alias shares its target's storage, as in a torch checkpoint of a
tied model.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from llmc_format.io.sink_base import CheckpointLayout, write_sharded
from llmc_format.io.sinks import SinkJob

if TYPE_CHECKING:
    import torch

TORCH = CheckpointLayout(
    "pytorch_model.bin", "pytorch_model.bin.index.json", "pytorch_model-{i:05d}-of-{n:05d}.bin"
)

def write_torch(
    tensors: Iterable[tuple[str, np.ndarray]],
    out_dir: str | os.PathLike[str],
    shard_size: int | None = None,
    *,
    aliases: Mapping[str, str] | None = None,
) -> list[str]:
    """Write tensors as a torch checkpoint (``pytorch_model.bin``, or shards plus an index).

    Each file is a ``torch.save``'d ``{name: tensor}`` dict holding only tensors, so that
    ``torch.load(weights_only=True)`` (what transformers uses) reads it. An alias shares
    its target's storage, as in a torch checkpoint of a tied model.
    """

    import torch

    def save(shard: dict[str, torch.Tensor], path: Path) -> None:
        with open(path, "wb") as f:
            torch.save(shard, f)

    return write_sharded(tensors, out_dir, TORCH, shard_size, save, aliases, True)


def write(job: SinkJob) -> list[str]:
    """The ``pt`` sink."""
    return write_torch(job.tensors, job.out_dir, shard_size=job.shard_size, aliases=job.aliases)
