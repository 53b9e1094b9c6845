"""Probe: is FFmpeg's native VVC decoder deterministic with its default threading?

    PYTHONPATH=. python research/vvc_threads.py [RUNS]

Decodes frame 7 of ``spec/vectors/v1-tiling.llmc``'s ``tiled.affine`` (the frame the
clean-room reader caught) RUNS times (default 20) through a bare PyAV codec context, with
the default thread count and with one thread, and counts the decodes whose luma plane does
not hash to the stored frame hash. Results depend on the machine's load (docs/decoders.md).
"""

from __future__ import annotations

import sys
from pathlib import Path

import av
import numpy as np
import xxhash

from llmc_format.container.reader import Reader

VECTOR = Path(__file__).resolve().parent.parent / "spec" / "vectors" / "v1-tiling.llmc"
FRAME = 7


def luma_hash(blob: bytes, threads: int | None) -> str:
    ctx = av.CodecContext.create("vvc", "r")
    if threads is not None:
        ctx.thread_count = threads
    frames = []
    for packet in [*ctx.parse(blob), *ctx.parse(None)]:
        frames.extend(ctx.decode(packet))
    frames.extend(ctx.decode(None))
    f = frames[0]
    plane = np.frombuffer(f.planes[0], np.uint16).reshape(f.height, -1)[:, :f.width]
    return xxhash.xxh3_64_hexdigest(np.ascontiguousarray(plane).tobytes())


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    with Reader(VECTOR) as r:
        entry = r.tensor("tiled.affine")
        stage = len(entry.pipeline) - 1
        blob = r.read_blob(entry.stage_blobs(stage)[FRAME])
        want = entry.pipeline[stage]["frame_hashes"][FRAME]
    for threads in (None, 1):
        wrong = sum(luma_hash(blob, threads) != want for _ in range(runs))
        print(f"threads={'default' if threads is None else threads}: {wrong} of {runs} wrong")


if __name__ == "__main__":
    main()
