"""Decode cost of the ``diagscale`` stage (issue 16: unpack throughput may drop < 10%).

For SmolLM2-135M decoder Linear weights (the 7 of each layer given): encode each with
``[diagscale(cols, rows), blockdct, vvc]`` at one QP, then time ``decode_tensor`` on the
blobs in memory — what ``unpack`` and ``safe_open().get_tensor`` run per tensor: the video
decode (PyAV), then the array stages — with the stage and without it (``[blockdct, vvc]`` on
the very same blobs: the float32 the stage receives), alternating, ``--repeat`` times each,
and the ``diagscale`` decode alone. Same bitstreams on both sides, so the difference is the
stage's cost, not a different encode's. Both vectors present (two multiplies: the costlier
case). The
multipliers are a data-free stand-in (``c_j`` ∝ column RMS^(−1/2), ``r_i`` ∝ row RMS^(−1/4));
the cost does not depend on their values. Wall seconds are medians; the machine is shared,
so the overhead is also reported on CPU seconds of this process (PyAV decodes in process).

Run:  python -m tools.bench_diagscale_decode --layers 0 15 --repeat 5 --qp 30 [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from typing import Any

import numpy as np

from llmc_format.codecs.base import ArraySpec
from llmc_format.codecs.diagscale import DiagScaleCodec
from llmc_format.codecs.stages import EncodedTensor, decode_tensor, encode_tensor


def stand_in_scales(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column and row multipliers from the weights alone (geometric mean 1)."""
    w64 = w.astype(np.float64)
    c = np.sqrt(np.mean(w64**2, axis=0)) ** -0.5
    r = np.sqrt(np.mean(w64**2, axis=1)) ** -0.25
    return c / np.exp(np.mean(np.log(c))), r / np.exp(np.mean(np.log(r)))


def _fetcher(enc: EncodedTensor) -> tuple[list[int], Any]:
    by: dict[int, list[bytes]] = {}
    for s, b in enc.blobs:
        by.setdefault(s, []).append(b)
    counts = [len(by.get(i, [])) for i in range(len(enc.pipeline))]
    return counts, lambda s, i: by[s][i]


def _decode_times(pipeline: list[dict[str, Any]], spec: ArraySpec, counts: list[int],
                  fetch: Any) -> tuple[float, float, np.ndarray]:
    """(wall, CPU) seconds of one ``decode_tensor``, and the result."""
    w0, c0 = time.perf_counter(), time.process_time()
    out = decode_tensor(pipeline, spec, counts, fetch)
    return time.perf_counter() - w0, time.process_time() - c0, out


def bench_tensor(name: str, w: np.ndarray, video: dict[str, Any], repeat: int) -> dict[str, Any]:
    """Encode ``w`` with ``[diagscale, blockdct, video]``; time, on the same blobs and
    alternating, the whole decode and the decode without the stage (``[blockdct, video]``:
    the float32 the stage receives); and the stage's decode alone."""
    spec = ArraySpec("float32", w.shape, name)
    c, r = stand_in_scales(w)
    enc = encode_tensor(w, spec, [{"id": "diagscale", "col_scale": c, "row_scale": r},
                                  {"id": "blockdct"}, video])
    counts, fetch = _fetcher(enc)
    inner_spec = ArraySpec("float32", w.shape, name)

    def inner_fetch(s: int, i: int) -> bytes:
        return fetch(s + 1, i)

    runs: dict[str, list[tuple[float, float]]] = {"with": [], "without": []}
    outs: dict[str, np.ndarray] = {}
    for _ in range(repeat):
        for key, pipe, n, f in (("with", enc.pipeline, counts, fetch),
                                ("without", enc.pipeline[1:], counts[1:], inner_fetch)):
            wall, cpu, outs[key] = _decode_times(pipe, inner_spec if key == "without" else spec,
                                                 n, f)
            runs[key].append((wall, cpu))
    stage = DiagScaleCodec.from_config(enc.pipeline[0])
    blobs = [b for s, b in enc.blobs if s == 0]
    walls, cpus = [], []
    for _ in range(repeat):
        w0, c0 = time.perf_counter(), time.process_time()
        stage.decode(outs["without"], blobs.__getitem__, len(blobs), spec)
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
    med = {k: (statistics.median(x[0] for x in v), statistics.median(x[1] for x in v))
           for k, v in runs.items()}
    return {"tensor": name, "shape": list(w.shape), "weights": int(w.size),
            "bytes": sum(len(b) for _, b in enc.blobs),
            "vector_bytes": sum(len(b) for b in blobs),
            "decode_wall_without": med["without"][0], "decode_wall_with": med["with"][0],
            "decode_cpu_without": med["without"][1], "decode_cpu_with": med["with"][1],
            "stage_alone_wall": statistics.median(walls),
            "stage_alone_cpu": statistics.median(cpus),
            "mse": float(np.mean((outs["with"].astype(np.float64) - w) ** 2))}


def bench(weights: dict[str, np.ndarray], qp: int, repeat: int, preset: str) -> dict[str, Any]:
    video = {"id": "vvc", "qp": qp, "preset": preset}
    rows = [bench_tensor(name, w, video, repeat) for name, w in weights.items()]
    tot = {k: sum(r[k] for r in rows) for k in (
        "decode_wall_without", "decode_wall_with", "decode_cpu_without", "decode_cpu_with",
        "stage_alone_wall", "stage_alone_cpu")}
    n = sum(r["weights"] for r in rows)
    return {
        "command": "python -m tools.bench_diagscale_decode",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "loadavg": os.getloadavg()[0], "qp": qp, "repeat": repeat, "weights": n,
        "tensors": rows,
        "total": {**tot,
                  "overhead_wall_pct": 100 * (tot["decode_wall_with"] / tot["decode_wall_without"] - 1),
                  "overhead_cpu_pct": 100 * (tot["decode_cpu_with"] / tot["decode_cpu_without"] - 1),
                  "stage_ns_per_weight": 1e9 * tot["stage_alone_wall"] / n,
                  "stage_share_of_decode_cpu_pct":
                      100 * tot["stage_alone_cpu"] / tot["decode_cpu_without"]},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, nargs="+", default=[0, 15])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--qp", type=int, default=30)
    ap.add_argument("--preset", default="faster")
    ap.add_argument("--json")
    args = ap.parse_args()
    from tools.models import load_smollm2, smollm2_decoder_linear_weights

    model, _ = load_smollm2()
    weights: dict[str, np.ndarray] = {}
    for layer in args.layers:
        weights.update(smollm2_decoder_linear_weights(model, layers=range(layer, layer + 1)))
    del model
    res = bench(weights, args.qp, args.repeat, args.preset)
    print(f"{'tensor':42s} {'shape':>12s} {'without s':>9s} {'with s':>8s} {'stage s':>8s} "
          f"{'vectors B':>9s}")
    for r in res["tensors"]:
        print(f"{r['tensor']:42s} {r['shape']!s:>12s} {r['decode_cpu_without']:9.4f} "
              f"{r['decode_cpu_with']:8.4f} {r['stage_alone_cpu']:8.4f} {r['vector_bytes']:9d}")
    t = res["total"]
    print(f"total {res['weights']:,} weights, CPU s: decode {t['decode_cpu_without']:.3f} without "
          f"the stage -> {t['decode_cpu_with']:.3f} with it ({t['overhead_cpu_pct']:+.1f}%); wall "
          f"{t['decode_wall_without']:.3f} -> {t['decode_wall_with']:.3f} s "
          f"({t['overhead_wall_pct']:+.1f}%); the stage alone {t['stage_ns_per_weight']:.2f} "
          f"ns/weight wall, {t['stage_share_of_decode_cpu_pct']:.1f}% of the decode's CPU; "
          f"load {res['loadavg']:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
