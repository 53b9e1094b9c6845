"""Decode cost of the ``diagscale`` stage (issue 16: unpack throughput may drop < 10%).

For SmolLM2-135M decoder Linear weights (the 7 of each layer given): encode each once with
``[blockdct, vvc]`` (the target packs' default) and once with ``[diagscale(cols, rows),
blockdct, vvc]`` at one QP, then time ``decode_tensor`` on the blobs in memory — what
``unpack`` and ``safe_open().get_tensor`` run per tensor: the video decode (PyAV), then the
array stages — alternating the two pipelines, ``--repeat`` times each, and the
``diagscale`` stage alone. Both vectors present (two multiplies: the costlier case). The
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
from llmc_format.codecs.pipeline import EncodedTensor, decode_tensor, encode_tensor


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


def _decode_times(enc: EncodedTensor, spec: ArraySpec) -> tuple[float, float, np.ndarray]:
    """(wall, CPU) seconds of one ``decode_tensor`` of ``enc``, and the result."""
    counts, fetch = _fetcher(enc)
    w0, c0 = time.perf_counter(), time.process_time()
    out = decode_tensor(enc.pipeline, spec, counts, fetch)
    return time.perf_counter() - w0, time.process_time() - c0, out


def _stage_alone(ds: EncodedTensor, spec: ArraySpec, repeat: int) -> float:
    """Median wall seconds of the ``diagscale`` stage's decode alone (its input decoded once)."""
    stage = DiagScaleCodec.from_config(ds.pipeline[0])
    blobs = [b for s, b in ds.blobs if s == 0]
    counts, fetch = _fetcher(ds)
    inner = decode_tensor(ds.pipeline[1:], ArraySpec("float32", spec.shape, spec.name),
                          counts[1:], lambda s, i: fetch(s + 1, i))
    walls = []
    for _ in range(repeat):
        w0 = time.perf_counter()
        stage.decode(inner, blobs.__getitem__, len(blobs), spec)
        walls.append(time.perf_counter() - w0)
    return statistics.median(walls)


def bench_tensor(name: str, w: np.ndarray, video: dict[str, Any], repeat: int) -> dict[str, Any]:
    """Encode ``w`` both ways, time the decodes (alternating) and the stage alone."""
    spec = ArraySpec("float32", w.shape, name)
    c, r = stand_in_scales(w)
    encs = {"base": encode_tensor(w, spec, [{"id": "blockdct"}, video]),
            "ds": encode_tensor(w, spec, [{"id": "diagscale", "col_scale": c, "row_scale": r},
                                          {"id": "blockdct"}, video])}
    runs: dict[str, list[tuple[float, float]]] = {"base": [], "ds": []}
    mse = {}
    for _ in range(repeat):
        for key, enc in encs.items():
            wall, cpu, out = _decode_times(enc, spec)
            runs[key].append((wall, cpu))
            mse[key] = float(np.mean((out.astype(np.float64) - w) ** 2))
    med = {k: (statistics.median(x[0] for x in v), statistics.median(x[1] for x in v))
           for k, v in runs.items()}
    return {"tensor": name, "shape": list(w.shape), "weights": int(w.size),
            "bytes_base": sum(len(b) for _, b in encs["base"].blobs),
            "bytes_diagscale": sum(len(b) for _, b in encs["ds"].blobs),
            "decode_wall_base": med["base"][0], "decode_wall_diagscale": med["ds"][0],
            "decode_cpu_base": med["base"][1], "decode_cpu_diagscale": med["ds"][1],
            "stage_alone_wall": _stage_alone(encs["ds"], spec, repeat),
            "mse_base": mse["base"], "mse_diagscale": mse["ds"]}


def bench(weights: dict[str, np.ndarray], qp: int, repeat: int, preset: str) -> dict[str, Any]:
    video = {"id": "vvc", "qp": qp, "preset": preset}
    rows = [bench_tensor(name, w, video, repeat) for name, w in weights.items()]
    tot = {"base_wall": sum(r["decode_wall_base"] for r in rows),
           "ds_wall": sum(r["decode_wall_diagscale"] for r in rows),
           "base_cpu": sum(r["decode_cpu_base"] for r in rows),
           "ds_cpu": sum(r["decode_cpu_diagscale"] for r in rows),
           "stage_wall": sum(r["stage_alone_wall"] for r in rows)}
    n = sum(r["weights"] for r in rows)
    return {
        "command": "python -m tools.bench_diagscale_decode",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "loadavg": os.getloadavg()[0], "qp": qp, "repeat": repeat, "weights": n,
        "tensors": rows,
        "total": {**tot,
                  "overhead_wall_pct": 100 * (tot["ds_wall"] / tot["base_wall"] - 1),
                  "overhead_cpu_pct": 100 * (tot["ds_cpu"] / tot["base_cpu"] - 1),
                  "stage_ns_per_weight": 1e9 * tot["stage_wall"] / n,
                  "stage_share_of_decode_pct": 100 * tot["stage_wall"] / tot["ds_wall"]},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, nargs="+", default=[0, 15])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--qp", type=int, default=30)
    ap.add_argument("--preset", default="faster")
    ap.add_argument("--json")
    args = ap.parse_args()
    from tools.models import smollm2_decoder_linear_weights

    weights: dict[str, np.ndarray] = {}
    for layer in args.layers:
        weights.update(smollm2_decoder_linear_weights(layers=range(layer, layer + 1)))
    res = bench(weights, args.qp, args.repeat, args.preset)
    print(f"{'tensor':42s} {'shape':>12s} {'base s':>8s} {'+ds s':>8s} {'stage s':>8s} "
          f"{'bytes +%':>8s}")
    for r in res["tensors"]:
        print(f"{r['tensor']:42s} {r['shape']!s:>12s} {r['decode_wall_base']:8.4f} "
              f"{r['decode_wall_diagscale']:8.4f} {r['stage_alone_wall']:8.4f} "
              f"{100 * (r['bytes_diagscale'] / r['bytes_base'] - 1):8.2f}")
    t = res["total"]
    print(f"total {res['weights']:,} weights: decode {t['base_wall']:.3f} s -> {t['ds_wall']:.3f} s "
          f"wall ({t['overhead_wall_pct']:+.1f}%), CPU {t['base_cpu']:.3f} -> {t['ds_cpu']:.3f} s "
          f"({t['overhead_cpu_pct']:+.1f}%); stage alone {t['stage_ns_per_weight']:.2f} ns/weight "
          f"= {t['stage_share_of_decode_pct']:.1f}% of the decode; load {res['loadavg']:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
