"""An existing archive as a Source: decoded tensors plus its attachments (for ``repack``).

Tensors the archive keeps in their source encoding (a final ``ggml`` stage) offer it
again (``NativeData``), so a repack keeps them as they are wherever it keeps them lossless.
Tensors stored through a leading ``diagscale`` stage offer their multipliers
(``diagscales``), so a repack codes them through the same stage again.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from llmc_format.codecs.base import ArraySpec
from llmc_format.codecs.diagscale import DiagScaleCodec, DiagScales
from llmc_format.codecs.stages import build, kept_encoding
from llmc_format.container.reader import Reader
from llmc_format.io.base import NativeData, Source, SourceTensor


class ArchiveSource(Source):
    """Tensors of ``path`` as the archive decodes them; aliases stay aliases."""

    def __init__(self, path: str | Path) -> None:
        super().__init__(Path(path))
        self.reader = Reader(path)

    def tensors(self) -> Iterator[tuple[str, SourceTensor]]:
        from llmc_format.decode import read_tensor

        for e in self.reader.index.tensors:
            if e.alias_of is None:
                yield e.name, SourceTensor(e.name, e.dtype, e.shape,
                                          lambda n=e.name: read_tensor(self.reader, n),
                                          self.path.name, native=self._native(e))

    def _native(self, e: Any) -> NativeData | None:
        from llmc_format.decode import read_native_blocks

        last = kept_encoding(e.pipeline)
        if last is None:
            return None
        return NativeData((*(dict(c) for c in e.pipeline[:-1]), last),
                          lambda n=e.name: np.frombuffer(read_native_blocks(self.reader, n),
                                                         np.uint8))

    def diagscales(self) -> dict[str, DiagScales]:
        """Per tensor whose pipeline begins with a ``diagscale`` stage: its multipliers,
        read from the stage's blobs (validated as the decoder does: exactly one binary16
        per row/column, each finite, positive and normal). Widened to float32 and rounded
        to binary16 again by ``DiagScales``, they are the stored values bit for bit, so a
        pipeline built from them stores the same blobs. A ``diagscale`` further down a
        pipeline (after a ``rowperm``: its rows are not the tensor's) is not offered."""
        out: dict[str, DiagScales] = {}
        for e in self.reader.index.tensors:
            if e.alias_of is not None or not e.pipeline or e.pipeline[0].get("id") != "diagscale":
                continue
            where = f"tensor {e.name!r}"
            stage = build(e.pipeline, where, stored=True)[0]  # closed, checked configs
            assert isinstance(stage, DiagScaleCodec)
            refs = e.stage_blobs(0)
            cols, rows = stage.vectors(lambda i, r=refs, w=where: self.reader.read_blob(r[i], w),
                                       len(refs), ArraySpec(e.dtype, e.shape, e.name))
            out[e.name] = DiagScales(cols, rows)
        return out

    def aliases(self) -> dict[str, str]:
        return {e.name: e.alias_of for e in self.reader.index.tensors if e.alias_of is not None}

    def attachments(self) -> Iterator[tuple[str, bytes]]:
        for a in self.reader.attachments():
            yield a.name, self.reader.read_attachment(a.name)

    def describe(self) -> dict[str, Any]:
        return {"format": "llmc", "repacked_from": self.path.name,
                "original_source": self.reader.metadata.get("source")}

    def close(self) -> None:
        self.reader.close()
