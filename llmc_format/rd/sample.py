"""Measure a tensor's rate-distortion samples cheaply: encode a few row blocks at a few QPs.

Rows are independent under per-row affine quantization and frames are coded one at a
time, so a handful of evenly spaced row blocks — a fraction of the tensor — predicts the
whole tensor's bits per weight and MSE at each QP. The full tensor is then encoded once,
at the QP the allocator picks. The quantization parameters' size is exact: the affine
stage runs on the whole tensor (cheap next to video coding).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from llmc_format.codecs.base import ArraySpec
from llmc_format.codecs.pipeline import decode_encoded, encode_tensor, stage_bytes
from llmc_format.codecs.registry import get_codec
from llmc_format.dtypes import name_of
from llmc_format.rd.metrics import error_energy
from llmc_format.rd.model import RDCurve

#: default sampled share of each tensor, and bounds in weights
SAMPLE_FRACTION = 0.125
MIN_SAMPLE = 1 << 16
MAX_SAMPLE = 1 << 20
SAMPLE_BLOCKS = 4


def sample_blocks(rows: int, cols: int, fraction: float = SAMPLE_FRACTION) -> list[tuple[int, int]]:
    """Evenly spaced row blocks covering about ``fraction`` of a (rows x cols) matrix."""
    want = min(rows * cols, max(MIN_SAMPLE, min(MAX_SAMPLE, int(fraction * rows * cols))))
    n_rows = min(rows, max(1, math.ceil(want / max(cols, 1))))
    if n_rows >= rows:
        return [(0, rows)]
    blocks = min(SAMPLE_BLOCKS, n_rows)
    h = math.ceil(n_rows / blocks)
    starts = np.linspace(0, rows - h, blocks).round().astype(int)
    out: list[tuple[int, int]] = []
    for s in starts:  # merge overlaps so no row is counted twice
        a, b = int(s), int(s) + h
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


@dataclass
class Measured:
    curve: RDCurve
    params_bytes: int  # bytes of the array→array stages' side blobs (whole tensor)
    sample_weights: int


def measure(name: str, array: np.ndarray, pipeline_at: Callable[[int], list[dict[str, Any]]],
            qps: Sequence[int], fraction: float = SAMPLE_FRACTION) -> Measured:
    """RD samples of ``array`` at ``qps``; ``pipeline_at(qp)`` gives the codec configs."""
    spec = ArraySpec(name_of(array.dtype), tuple(array.shape), name)
    matrix = array.reshape(array.shape[0], -1) if array.ndim >= 2 else array.reshape(1, -1)
    blocks = sample_blocks(*matrix.shape, fraction)
    sample = np.concatenate([matrix[a:b] for a, b in blocks], axis=0)
    sspec = ArraySpec(spec.dtype, tuple(sample.shape), name)
    configs = pipeline_at(qps[0])
    params_bytes = 0
    for cfg in configs[:-1]:  # exact side-blob cost of the array stages on the full tensor
        enc = get_codec(cfg, f"tensor {name!r}").encode(array, spec)
        params_bytes += sum(len(b) for b in enc.blobs)
    bpw, mse = [], []
    last = len(configs) - 1
    for q in qps:
        enc = encode_tensor(sample, sspec, pipeline_at(q))
        _, err = error_energy(sample, decode_encoded(enc, sspec))
        bpw.append(8 * stage_bytes(enc, last) / sample.size)
        mse.append(err / sample.size)
    signal, _ = error_energy(array, np.zeros((), dtype=np.float32))
    curve = RDCurve(list(qps), bpw, mse, int(array.size), signal)
    return Measured(curve, params_bytes, int(sample.size))
