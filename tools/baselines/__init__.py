"""Third-party compression baselines (NNCodec, HQQ) wrapped behind one small interface.

Each adapter returns what a fair comparison needs: the all-in compressed size (every
byte a decoder would need, headers and scales included), the reconstruction as float32,
and the wall-clock times. Benchmarks compute SNR and perplexity from these themselves.
"""

from __future__ import annotations

import numpy as np


def snr_db(originals: list[np.ndarray], reconstructions: list[np.ndarray]) -> float:
    """Weighted SNR over all weights: 10·log10(Σx² / Σ(x−y)²), accumulated in float64.

    Weighted (not the mean of per-matrix SNRs) so large matrices count by their size,
    which is what perplexity responds to.
    """
    signal = 0.0
    noise = 0.0
    for x, y in zip(originals, reconstructions, strict=True):
        x64 = np.asarray(x, dtype=np.float64)
        signal += float(np.sum(x64 * x64))
        noise += float(np.sum((x64 - np.asarray(y, dtype=np.float64)) ** 2))
    if noise == 0.0:
        return float("inf")
    return 10.0 * float(np.log10(signal / noise))
