"""Levers on top of ``blockdct`` (issue 8): row/column sorting by RMS, encoder presets.

SmolLM2 decoder weights of layers 0, 7, 15, 29 through llmc's own [blockdct, vvc] pipeline
at equal-step QPs 32..16 (as ``tools/bench_lossy.py``'s ``vvc-dct``). Each argument is
``ORDER[@PRESET]``: ORDER ``none`` | ``norm`` (rows sorted by RMS) | ``norm2`` (rows and
columns), the permutations' bytes (log2 n!) counted in the rate; PRESET a libvvenc preset.
Prints bpw:SNR per QP, SNR interpolated at 2/2.5/3/4 bpw and the encoder's CPU speed.

    OPENBLAS_NUM_THREADS=1 python -m research.probe_dct_levers none norm2 none@fast
"""

from __future__ import annotations

import math
import resource
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from llmc_format.codecs.base import ArraySpec
from llmc_format.codecs.stages import decode_encoded, encode_tensor
from research.tune_vvc import _perms, perm_bytes
from tools.bench_lossy import equal_step_qp
from tools.models import smollm2_decoder_linear_weights

QPS = (32, 28, 24, 20, 16)
TARGETS = (2.0, 2.5, 3.0, 4.0)


def child_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def code(name: str, w: np.ndarray, order: str, qp: int, preset: str) -> tuple[int, float]:
    """(bytes incl. permutations, squared error) of one matrix."""
    rows, cols = _perms(w, order)
    m = w if rows is None else w[rows]
    m = np.ascontiguousarray(m if cols is None else m[:, cols])
    spec = ArraySpec("float32", m.shape, name)
    pipe = [{"id": "blockdct", "bits": 10},
            {"id": "vvc", "qp": equal_step_qp(m, qp, dct=True), "threads": 1, "preset": preset}]
    enc = encode_tensor(m, spec, pipe)
    rec = decode_encoded(enc, spec).astype(np.float64)
    if cols is not None:
        rec = rec[:, np.argsort(cols)]
    if rows is not None:
        rec = rec[np.argsort(rows)]
    extra = sum(perm_bytes(len(p)) for p in (rows, cols) if p is not None)
    return sum(len(b) for _, b in enc.blobs) + extra, float(((w.astype(np.float64) - rec) ** 2).sum())


def main() -> None:
    weights = smollm2_decoder_linear_weights(layers=[0, 7, 15, 29])
    n = sum(w.size for w in weights.values())
    signal = sum(float((w.astype(np.float64) ** 2).sum()) for w in weights.values())
    for arg in sys.argv[1:] or ["none"]:
        order, _, preset = arg.partition("@")
        preset = preset or "faster"
        c0, pts = child_cpu(), []
        for qp in QPS:
            with ThreadPoolExecutor(2) as ex:
                futures = [ex.submit(code, name, w, order, qp, preset) for name, w in weights.items()]
                res = [f.result() for f in futures]
            pts.append((8 * sum(r[0] for r in res) / n, 10 * math.log10(signal / sum(r[1] for r in res))))
        xs, ys = zip(*pts, strict=True)
        at = " ".join(f"{np.interp(t, xs, ys):.2f}" for t in TARGETS)
        print(f"{arg}: " + " ".join(f"{b:.3f}:{s:.2f}" for b, s in pts)
              + f" | SNR@2/2.5/3/4: {at} | encoder {len(QPS) * n / (child_cpu() - c0) / 1e6:.3f}"
              " M w/CPU-s", flush=True)


if __name__ == "__main__":
    main()
