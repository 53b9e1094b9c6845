"""Decode every lossy blob of archives with a second decoder and compare with PyAV, bit for bit.

    python tools/cross_decode.py [ARCHIVE ...] [--vectors] [--jobs N] [--json OUT.json]

For each video blob of each archive (``--vectors``: every valid vector of spec/vectors):
FFmpeg's decoder (PyAV, what llmc reads with) gives the reference luma plane, which must
hash to the stored ``frame_hashes`` entry; then every installed second decoder of the codec
(``llmc_format/codecs/video/crossdecode.py``: VVdeC for VVC, libde265 for HEVC, libaom's
aomdec and dav1d for AV1) decodes the same bytes, and its luma plane must equal PyAV's
sample for sample. The bitstream structure check (``bitstream.py``) runs on each blob too.

A vector whose JSON names a ``strict`` error (the published ``v1-lossy-vvc``, libvvenc
console text after the slice data) is expected to be rejected and is counted apart.
Prints a table per codec and decoder (blobs agreeing / total) and the decoder versions;
exit status 1 if any blob disagrees unexpectedly. Results: docs/results/cross-decode.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from llmc_format.codecs.video import bitstream, crossdecode
from llmc_format.codecs.video.codecs import luma_hash
from llmc_format.container.reader import Reader
from llmc_format.errors import LlmcError
from llmc_format.pipeline.bitstreams import VideoFrame, iter_archive_frames, second_decode

VECTORS = Path(__file__).resolve().parent.parent / "spec" / "vectors"


def vector_paths() -> tuple[list[Path], set[str]]:
    """The valid vectors, and the names of those a strict reader must reject."""
    paths, known_bad = [], set()
    for meta in sorted(VECTORS.glob("*.json")):
        expected = json.loads(meta.read_text())
        if not expected.get("valid"):
            continue
        paths.append(meta.with_suffix(".llmc"))
        if "strict" in expected:
            known_bad.add(meta.stem)
    return paths, known_bad


def check_blob(reader: Reader, vf: VideoFrame) -> dict[str, Any]:
    """One blob: structure, PyAV vs stored hash, every second decoder vs PyAV."""
    blob = reader.read_blob(vf.ref, vf.what)
    row: dict[str, Any] = {"tensor": vf.tensor, "frame": vf.frame.index,
                           "codec": vf.codec.codec_id, "bytes": len(blob),
                           "size": f"{vf.frame.width}x{vf.frame.height}",
                           "pix_fmt": vf.frame.pix_fmt, "decoders": {}}
    try:
        bitstream.check(vf.codec.codec_id, blob, vf.what)
        row["structure"] = "ok"
    except LlmcError as exc:
        row["structure"] = str(exc)
    try:
        ours = vf.codec.decode_luma(blob, vf.frame, vf.what)
    except LlmcError as exc:
        row["pyav"] = f"failed: {exc}"
        return row
    row["pyav"] = "ok" if luma_hash(ours) == vf.frame.luma_hash else "differs from frame hash"
    for dec in crossdecode.find_all(vf.codec.codec_id):
        row["decoders"][dec.describe()] = second_decode(dec, vf, blob, reference=ours)
    return row


def run(paths: list[Path], known_bad: set[str], jobs: int) -> dict[str, Any]:
    results: dict[str, Any] = {"archives": {}, "decoders": {}, "machine": platform.platform()}
    for codec in ("vvc", "hevc", "av1"):
        results["decoders"][codec] = [d.describe() for d in crossdecode.find_all(codec)]
    for path in paths:
        with Reader(path) as reader, ThreadPoolExecutor(max(1, jobs)) as ex:
            frames = list(iter_archive_frames(reader))
            rows = list(ex.map(lambda vf, r=reader: check_blob(r, vf), frames))
        results["archives"][str(path)] = {"expect_rejection": path.stem in known_bad,
                                          "blobs": rows}
    return results


def summarize(results: dict[str, Any]) -> tuple[list[str], bool]:
    """Markdown lines of the per-codec/decoder counts, and whether all is as expected."""
    agree: Counter[tuple[str, str]] = Counter()
    total: Counter[tuple[str, str]] = Counter()
    rejected_bad: Counter[tuple[str, str]] = Counter()
    problems: list[str] = []
    per_archive: dict[str, Counter[str]] = defaultdict(Counter)
    for path, arc in results["archives"].items():
        for row in arc["blobs"]:
            codec = row["codec"]
            per_archive[path][codec] += 1
            name = Path(path).name
            if row["pyav"] != "ok":
                problems.append(f"{name} {row['tensor']} frame {row['frame']}: PyAV {row['pyav']}")
            if row["structure"] != "ok" and not arc["expect_rejection"]:
                problems.append(f"{name}: {row['structure']}")
            for dec, verdict in row["decoders"].items():
                key = (codec, dec)
                if arc["expect_rejection"]:
                    rejected_bad[key] += verdict != "agrees"
                    continue
                total[key] += 1
                agree[key] += verdict == "agrees"
                if verdict != "agrees":
                    problems.append(f"{name} {row['tensor']} frame {row['frame']}: {dec}: "
                                    f"{verdict}")
    lines = ["| codec | second decoder | blobs agreeing with PyAV / total | known-bad blobs "
             "rejected |", "|---|---|---|---|"]
    for codec, decs in results["decoders"].items():
        if not decs:
            lines.append(f"| {codec} | (none installed) | – | – |")
        for dec in decs:
            key = (codec, dec)
            lines.append(f"| {codec} | {dec} | {agree[key]} / {total[key]} | "
                         f"{rejected_bad[key] or '–'} |")
    lines += ["", "| archive | video blobs per codec |", "|---|---|"]
    for path, counts in per_archive.items():
        lines.append(f"| {Path(path).name} | "
                     f"{', '.join(f'{c} {n}' for c, n in sorted(counts.items()))} |")
    if problems:
        lines += ["", "Disagreements:", *(f"- {p}" for p in problems)]
    return lines, not problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("archives", nargs="*", type=Path)
    ap.add_argument("--vectors", action="store_true", help="every valid vector of spec/vectors")
    ap.add_argument("--jobs", "-j", type=int, default=1, help="blobs decoded at once")
    ap.add_argument("--json", type=Path, help="write every blob's verdicts here")
    args = ap.parse_args(argv)
    paths, known_bad = vector_paths() if args.vectors else ([], set())
    paths += args.archives
    if not paths:
        ap.error("name archives or pass --vectors")
    results = run(paths, known_bad, args.jobs)
    lines, ok = summarize(results)
    print("\n".join(lines))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
