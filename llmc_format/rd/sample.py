"""Measure a tensor's rate-distortion samples cheaply: encode a few row blocks at a few QPs.

Frames are coded one at a time (all-intra), so a handful of evenly spaced row blocks — a
fraction of the tensor — predicts the whole tensor's bits per weight and MSE at each QP.
The full tensor is then encoded once, at the QP the allocator picks. The quantization
parameters' size is exact: the affine stage runs on the whole tensor (cheap next to
video coding).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from llmc_format.codecs.base import ArrayArrayCodec, ArrayBytesCodec, ArraySpec
from llmc_format.codecs.registry import get_codec
from llmc_format.codecs.stages import build
from llmc_format.dtypes import name_of
from llmc_format.metrics import error_energy
from llmc_format.rd.model import RDCurve

#: default sampled share of each tensor, and bounds in weights
SAMPLE_FRACTION = 0.125
MIN_SAMPLE = 1 << 16
MAX_SAMPLE = 1 << 20
SAMPLE_BLOCKS = 4


def sample_blocks(rows: int, cols: int, fraction: float = SAMPLE_FRACTION,
                  align: int = 1) -> list[tuple[int, int]]:
    """Evenly spaced row blocks covering about ``fraction`` of a (rows x cols) matrix.

    With ``align`` > 1 the blocks start and end on multiples of ``align`` (or at the last
    row), so that a stage mixing bands of ``align`` rows (``blockdct``) decodes each block
    from exactly its own rows.
    """
    want = min(rows * cols, max(MIN_SAMPLE, min(MAX_SAMPLE, int(fraction * rows * cols))))
    n_rows = min(rows, max(1, math.ceil(want / max(cols, 1))))
    if n_rows >= rows:
        return [(0, rows)]
    blocks = min(SAMPLE_BLOCKS, n_rows)
    h = -(-math.ceil(n_rows / blocks) // align) * align
    if h >= rows:
        return [(0, rows)]
    starts = np.linspace(0, rows - h, blocks).round().astype(int) // align * align
    out: list[tuple[int, int]] = []
    for s in starts:  # merge overlaps so no row is counted twice
        a, b = int(s), min(rows, int(s) + h)
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
            qps: Sequence[int], fraction: float = SAMPLE_FRACTION,
            col_weights: np.ndarray | None = None) -> Measured:
    """RD samples of ``array`` at ``qps``; ``pipeline_at(qp)`` gives the codec configs.

    ``col_weights`` (one per column of the matrix view, mean 1: E[x_j²]/mean E[x²] of a
    linear layer's inputs) adds the *activation-weighted* MSE, mean of u_j·(x − x̂)², to
    each sample (``RDCurve.weighted``): what a layer's output error is made of, and what
    the rate allocation then minimizes; the plain MSE is kept for the SNR records.

    The array→array stages (affine quantization) run once on the *whole* tensor and only
    the final, QP-dependent stage runs on the sampled rows of their output: per-tensor
    scaling takes its range from the whole tensor — outliers a sample could miss set the
    step — so the sample must be coded on exactly the codes the full encode will code.
    Each sampled block is then dequantized with the whole tensor's parameters.
    """
    where = f"tensor {name!r}"
    spec = ArraySpec(name_of(array.dtype), tuple(array.shape), name)
    stages = build(pipeline_at(qps[0]), where)
    specs, side, codes = [spec], [], array
    array_stages = []
    for stage in stages[:-1]:
        assert isinstance(stage, ArrayArrayCodec)
        enc = stage.encode(codes, specs[-1])
        array_stages.append(get_codec(enc.config, where))  # the resolved, stored config
        side.append(enc.blobs)
        codes = enc.array
        specs.append(stage.resolve(specs[-1]))
    params_bytes = sum(len(b) for blobs in side for b in blobs)
    two_d = array.ndim >= 2
    matrix = codes.reshape(codes.shape[0], -1) if two_d else codes.reshape(1, -1)
    align = max((s.row_align for s in array_stages), default=1)
    blocks = sample_blocks(*matrix.shape, fraction, align)
    sample = np.concatenate([matrix[a:b] for a, b in blocks], axis=0)
    code_spec = specs[-1]
    sspec = ArraySpec(code_spec.dtype, (sample.shape[0], *code_spec.shape[1:]) if two_d
                      else code_spec.shape, name)
    sample = sample.reshape(sspec.shape)
    u = None
    if col_weights is not None and two_d:
        u = np.asarray(col_weights, dtype=np.float64).reshape(-1)
        if u.size != matrix.shape[1] or not np.all(np.isfinite(u)) or np.any(u < 0):
            raise ValueError(f"{where}: {u.size} column weights for {matrix.shape[1]} columns, "
                             "or some not finite and >= 0")
    bpw, mse, wmse = [], [], []
    for q in qps:
        enc = get_codec(pipeline_at(q)[-1], where).encode(sample, sspec)
        decoded = enc.reconstruction
        if decoded is None:
            last = get_codec(enc.config, where)
            assert isinstance(last, ArrayBytesCodec)
            decoded = last.decode(lambda i, e=enc: e.blobs[i], len(enc.blobs), sspec)
        err, werr, at = 0.0, 0.0, 0
        for a, b in blocks:
            block = decoded[at:at + b - a] if two_d else decoded
            at += b - a
            rows = (a, b) if two_d else None
            for k in range(len(array_stages) - 1, -1, -1):
                block = array_stages[k].decode(block, lambda i, k=k: side[k][i], len(side[k]),
                                               specs[k], rows)
            err += error_energy(array[a:b] if two_d else array, block)[1]
            if u is not None:
                d = (array[a:b].reshape(b - a, -1).astype(np.float64)
                     - np.asarray(block).reshape(b - a, -1))
                werr += float(np.einsum("ij,ij,j->", d, d, u))
        bpw.append(8 * sum(len(b) for b in enc.blobs) / sample.size)
        mse.append(err / sample.size)
        wmse.append(werr / sample.size)
    signal, _ = error_energy(array, np.zeros((), dtype=np.float32))
    curve = RDCurve(list(qps), bpw, mse, int(array.size), signal,
                    weighted=wmse if u is not None else None)
    return Measured(curve, params_bytes, int(sample.size))
