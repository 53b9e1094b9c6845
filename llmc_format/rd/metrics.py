"""Distortion measures shared by pack, verify and the RD optimizer."""

from __future__ import annotations

import math

import numpy as np


def error_energy(source: np.ndarray, decoded: np.ndarray) -> tuple[float, float]:
    """(sum of squared source values, sum of squared errors), in float64."""
    x = np.asarray(source, dtype=np.float64).ravel()
    y = np.asarray(decoded, dtype=np.float64).ravel()
    return float(np.dot(x, x)), float(np.dot(x - y, x - y))


def snr_db(signal_energy: float, noise_energy: float) -> float:
    """10·log10(signal / noise); +inf when there is no noise, 0 for a zero signal."""
    if noise_energy <= 0:
        return math.inf
    if signal_energy <= 0:
        return 0.0
    return 10.0 * math.log10(signal_energy / noise_energy)


def distortion(source: np.ndarray, decoded: np.ndarray) -> dict[str, float]:
    """MSE and SNR (dB) of ``decoded`` against ``source``, as plain data for the index."""
    sig, err = error_energy(source, decoded)
    n = max(source.size, 1)
    return {"mse": err / n, "snr_db": snr_db(sig, err)}
