"""inspect: what an archive holds, as plain data (the CLI renders it; --json prints it)."""

from __future__ import annotations

import os
from typing import Any

from llmc_format.codecs.stages import is_lossless, stage_label
from llmc_format.container.layout import is_internal_attachment
from llmc_format.container.reader import Reader
from llmc_format.rd.records import qp_range_of, rd_problem, summary_problem


def _codec_label(pipeline: tuple[dict[str, Any], ...]) -> str:
    """Stage labels joined by ``+`` (a ``ggml`` stage shows its block type: ``ggml:Q4_1``)."""
    return "+".join(stage_label(c) for c in pipeline)


def describe(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Per-tensor facts and totals, read from the index only (no blob is decoded)."""
    with Reader(path) as r:
        tensors = []
        weights = source_bytes = stored = lossy = 0
        for t in r.index.tensors:
            entry = r.resolve(t.name)
            row: dict[str, Any] = {
                "name": t.name, "dtype": t.dtype, "shape": list(t.shape),
                "codec": f"alias of {t.alias_of}" if t.alias_of else _codec_label(t.pipeline),
                "stored_bytes": t.stored_bytes, "source_bytes": t.nbytes,
                "bpw": 8 * t.stored_bytes / t.numel if t.numel else 0.0,
                "ratio": t.nbytes / t.stored_bytes if t.stored_bytes else None,
                "blobs": len(t.blobs),
                # an alias is what its target is
                "lossless": is_lossless(entry.pipeline),
            }
            if t.alias_of is None:
                row["lossless"] = is_lossless(entry.pipeline)
                weights += t.numel
                source_bytes += t.nbytes
                stored += t.stored_bytes
                lossy += not row["lossless"]
            problem = rd_problem(t.rd, qp_range_of(entry.pipeline))
            if problem is not None:  # shown as unknown, with why; never computed with
                row["rd_problem"] = problem
            elif t.rd:
                for k, v in t.rd.items():
                    if k in ("qp", "snr_db", "mse", "encode_seconds", "decode_seconds"):
                        row[k] = v
                row["rd"] = t.rd
            tensors.append(row)
        file_bytes = r.file_size
        input_bytes = _input_bytes(r)
        return {
            "path": str(path),
            "format_version": f"{r.header.major}.{r.header.minor}",
            "alignment": r.header.alignment,
            "metadata": r.metadata,
            "rd_summary_problem": summary_problem(r.metadata.get("rd")),
            "tensors": tensors,
            "attachments": [{"name": a.name, "size": a.size, "stored_bytes": a.blob.length}
                            for a in r.attachments()],
            "summary": {
                "tensors": len(tensors), "lossy_tensors": lossy, "weights": weights,
                "source_bytes": source_bytes, "stored_tensor_bytes": stored,
                "file_bytes": file_bytes,
                "ratio": source_bytes / file_bytes if file_bytes else 0.0,
                # the files the archive was packed from (None when not recorded)
                "input_bytes": input_bytes,
                "input_ratio": input_bytes / file_bytes if input_bytes and file_bytes else None,
                "file_bpw": 8 * file_bytes / weights if weights else 0.0,
            },
        }


def _input_bytes(r: Reader) -> int | None:
    """Bytes of the files the archive was packed from: the source's weight files as the
    pack recorded them, plus, for a model directory, its other files (config, tokenizer:
    stored as attachments). A GGUF's config/tokenizer attachments are derived from the
    GGUF itself and add nothing. None when the source recorded no files (an in-memory
    dict, a repacked archive)."""
    source = r.metadata.get("source")
    files = source.get("files") if isinstance(source, dict) else None
    if not isinstance(files, list) or not files:
        return None
    sizes = [f.get("size") for f in files if isinstance(f, dict)]
    if not sizes or not all(isinstance(x, int) for x in sizes):
        return None
    total = sum(sizes)
    if str(source.get("format", "")).startswith("hf-"):
        total += sum(a.size for a in r.attachments() if not is_internal_attachment(a.name))
    return total


def summarize(path: str | os.PathLike[str]) -> dict[str, Any]:
    s = describe(path)["summary"]
    return s
