"""Compression baselines in one place: round-to-nearest (``rtn``) and third-party ones
(NNCodec, HQQ) wrapped behind one small interface.

Each adapter returns what a fair comparison needs: the all-in compressed size (every
byte a decoder would need, headers and scales included), the reconstruction as float32,
and the wall-clock times. Benchmarks compute SNR and perplexity from these themselves.
"""

from __future__ import annotations

import numpy as np

from llmc_format import metrics
from llmc_format.metrics import error_energy


def snr_db(originals: list[np.ndarray], reconstructions: list[np.ndarray]) -> float:
    """Weighted SNR over all weights (``llmc_format.metrics``: +inf with no error).

    Weighted (not the mean of per-matrix SNRs) so large matrices count by their size,
    which is what perplexity responds to.
    """
    signal = noise = 0.0
    for x, y in zip(originals, reconstructions, strict=True):
        s, n = error_energy(np.asarray(x), np.asarray(y))
        signal, noise = signal + s, noise + n
    return metrics.snr_db(signal, noise)
