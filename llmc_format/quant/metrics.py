"""Error measures shared by the quantizers, the baselines and the benchmarks.

One definition so every tool reports the same number: SNR is signal energy over error
energy of the whole tensor, in dB, computed in float64 (10·log10(Σx² / Σ(x−y)²)).
"""

from __future__ import annotations

import math

import numpy as np


def error_sums(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(Σx², Σ(x−y)²) in float64: the two sums SNR is made of, so callers can add them up."""
    x64 = np.asarray(x, dtype=np.float64)
    diff = x64 - np.asarray(y, dtype=np.float64)
    return float(np.dot(x64.ravel(), x64.ravel())), float(np.dot(diff.ravel(), diff.ravel()))


def snr_from_sums(signal: float, noise: float) -> float | None:
    """SNR in dB from energy sums; None when it is undefined or infinite (no error, no signal).

    None rather than ``inf`` because the value ends up in plain-data metadata that must
    survive JSON as well as msgpack.
    """
    if noise <= 0.0 or signal <= 0.0:
        return None
    return 10.0 * math.log10(signal / noise)


def mse(x: np.ndarray, y: np.ndarray) -> float:
    """Mean squared error in float64 (0.0 for empty arrays)."""
    n = np.asarray(x).size
    return error_sums(x, y)[1] / n if n else 0.0


def snr_db(x: np.ndarray, y: np.ndarray) -> float | None:
    """SNR of ``y`` as a reconstruction of ``x``, in dB (None if undefined: see snr_from_sums)."""
    return snr_from_sums(*error_sums(x, y))
