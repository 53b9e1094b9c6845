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
from itertools import pairwise
from typing import Any

import numpy as np

from llmc_format.codecs.base import ArrayArrayCodec, ArrayBytesCodec, ArraySpec
from llmc_format.codecs.registry import get_codec
from llmc_format.codecs.stages import build
from llmc_format.dtypes import name_of
from llmc_format.errors import CodecError
from llmc_format.metrics import error_energy
from llmc_format.rd.allocate import EXTRAPOLATE
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
    #: the lowest QP the codec coded the sample at, when a finer one failed (else None): the
    #: allocator must not go below it (``measure``'s ``finer_until``)
    floor_qp: int | None = None


def measure(name: str, array: np.ndarray, pipeline_at: Callable[[int], list[dict[str, Any]]],
            qps: Sequence[int], fraction: float = SAMPLE_FRACTION,
            col_weights: np.ndarray | None = None, *,
            finer_until: tuple[float, int] | None = None,
            known: RDCurve | None = None) -> Measured:
    """RD samples of ``array`` at ``qps``; ``pipeline_at(qp)`` gives the codec configs.

    ``known``: samples measured before (by this function, with the same pipelines and
    column weights), kept as they are, not coded again: with ``finer_until``, the
    extension of a curve the allocation found too short (``pipeline.target``).

    ``finer_until`` = (bits per weight, lowest QP): after ``qps``, keep sampling finer QPs
    — one ``qps`` spacing below the finest sample each time, the lowest QP itself once it
    is within ``EXTRAPOLATE`` — until the finest rate the allocator may use (the curve
    ``EXTRAPOLATE`` QPs below its finest sample) reaches that many bits per weight, or the
    lowest QP is sampled. Why: the allocator uses a curve only a few QPs beyond its samples
    (``rd.allocate.EXTRAPOLATE``); a tensor whose exact storage costs far more than its
    finest sample (SmolLM2's Q8_0 embedding: 7.8 bits/weight exact, 4.6 at its finest
    sample) otherwise has no choice between ~5 bits/weight and exact, and a size target
    in that gap lands far under (docs/results/gguf.md). The new samples are coded on
    the same rows as ``qps``.

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
    if known is not None and (known.weighted is None) != (col_weights is None):
        raise ValueError(f"{where}: known samples with and new ones without column weights, "
                         "or the reverse")
    stages = build(pipeline_at([*qps, *(known.qps if known else [])][0]), where)
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

    def point(q: int) -> None:
        """Code the sample at QP ``q``; append its rate, MSE and weighted MSE."""
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

    measured = list(qps)
    for q in measured:
        point(q)
    if known is not None:
        measured += known.qps
        bpw += known.bpw
        mse += known.mse
        wmse += known.weighted or []
    signal, _ = error_energy(array, np.zeros((), dtype=np.float32))
    floor = None
    if finer_until is not None:
        floor = _extend(measured, bpw, mse, int(array.size), signal, point, *finer_until)
    curve = RDCurve(measured, bpw, mse, int(array.size), signal,
                    known.rate_scale if known is not None else 1.0,
                    weighted=wmse if u is not None else None)
    return Measured(curve, params_bytes, int(sample.size), floor)


def _extend(measured: list[int], bpw: list[float], mse: list[float], numel: int, signal: float,
            point: Callable[[int], None], reach: float, lowest: int) -> int | None:
    """Sample finer QPs (``measure``'s ``finer_until``); ``point(q)`` codes the sample at
    ``q`` and appends to ``bpw`` and ``mse``. Returns the lowest QP that coded when a finer
    one failed, else None.

    A codec may refuse a QP its range allows: libvvenc fails below QP 4 on blockdct codes
    that fill the 10-bit range (dense Gaussian weights), while the SmolLM2 embedding's codes
    (a range set by outliers) code at QP 0. A failure ends the descent; a bisection
    between it and the finest QP that coded then finds the lowest one that codes.
    """
    step = max(1, min((b - a for a, b in pairwise(sorted(measured))), default=6))

    def reachable() -> float:  # the finest rate the allocator may use with these samples
        return RDCurve(measured, bpw, mse, numel, signal).rate(
            max(lowest, min(measured) - EXTRAPOLATE))

    def coded(q: int) -> bool:
        try:
            point(q)
        except CodecError:
            return False
        measured.append(q)
        return True

    while min(measured) > lowest and reachable() < reach:
        q = min(measured) - step
        q = lowest if q - lowest <= EXTRAPOLATE else q  # near the floor: sample it
        if coded(q):
            continue
        failed = q
        while min(measured) - failed > 1 and reachable() < reach:
            mid = (failed + min(measured)) // 2
            if not coded(mid):
                failed = mid
        return min(measured)
    return None
