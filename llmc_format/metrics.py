"""Error measures: one definition used by the quantizers, pack, verify, RD and the tools.

SNR is signal energy over error energy of the whole tensor, in dB, with both sums
accumulated in float64: ``10·log10(Σx² / Σ(x−y)²)``. ``snr_db`` is the number (+inf with
no error); ``snr_record`` is what goes into plain-data records that must survive JSON
(None wherever the number is not finite).
"""

from __future__ import annotations

import math

import numpy as np

#: Elements per block of ``error_energy``: its float64 temporaries stay ~8 MiB each
#: (whole-tensor float64 copies cost 24 bytes per weight, 12x a bf16 tensor) and in cache.
ENERGY_CHUNK = 1 << 20


def error_energy(source: np.ndarray, decoded: np.ndarray | float) -> tuple[float, float]:
    """(sum of squared source values, sum of squared errors), accumulated in float64.

    ``decoded`` has ``source``'s size, or is a scalar (``error_energy(x, 0)`` is x's energy).
    """
    x = np.asarray(source).reshape(-1)
    y = np.asarray(decoded)
    scalar = y.size == 1 and x.size != 1
    y = y.reshape(-1)
    if not scalar and y.size != x.size:
        raise ValueError(f"error_energy: {y.size} decoded values for {x.size} source values")
    signal = noise = 0.0
    for a in range(0, x.size, ENERGY_CHUNK):
        xs = x[a:a + ENERGY_CHUNK].astype(np.float64)
        diff = xs - (y.astype(np.float64) if scalar else y[a:a + ENERGY_CHUNK])
        signal += float(np.dot(xs, xs))
        noise += float(np.dot(diff, diff))
    return signal, noise


def snr_db(signal_energy: float, noise_energy: float) -> float:
    """10·log10(signal / noise); +inf when there is no noise, 0 for a zero signal."""
    if noise_energy <= 0:
        return math.inf
    if signal_energy <= 0:
        return 0.0
    return 10.0 * math.log10(signal_energy / noise_energy)


def snr_record(signal_energy: float, noise_energy: float) -> float | None:
    """``snr_db`` for plain-data records (quantization info): None when it is undefined or
    infinite (no error, or no signal), since the value must survive JSON as well as msgpack."""
    if noise_energy <= 0.0 or signal_energy <= 0.0:
        return None
    return snr_db(signal_energy, noise_energy)


def mse(source: np.ndarray, decoded: np.ndarray) -> float:
    """Mean squared error in float64 (0.0 for empty arrays)."""
    n = np.asarray(source).size
    return error_energy(source, decoded)[1] / n if n else 0.0


def distortion(source: np.ndarray, decoded: np.ndarray) -> dict[str, float]:
    """MSE and SNR (dB) of ``decoded`` against ``source``, as plain data for the index."""
    sig, err = error_energy(source, decoded)
    n = max(source.size, 1)
    return {"mse": err / n, "snr_db": snr_db(sig, err)}


def versus_original(rd: dict[str, object]) -> dict[str, float] | None:
    """A repacked tensor's error against the *original* model, estimated.

    ``llmc repack`` codes an already lossy tensor again, so its recorded ``mse``/``snr_db``
    are against the archive it was repacked from. It also records ``prior_mse`` (the error
    that archive already carried against the original, itself carried forward through
    repeated repacks) and ``original_energy`` (the original's mean square). The two coding
    errors are independent, so their MSEs add in expectation: MSE vs the original ≈
    ``prior_mse + mse``. None for a tensor that was never repacked.
    """
    prior, mse, energy = rd.get("prior_mse"), rd.get("mse"), rd.get("original_energy")
    if not isinstance(prior, (int, float)) or not isinstance(mse, (int, float)):
        return None
    total = float(prior) + float(mse)
    out = {"mse": total}
    if isinstance(energy, (int, float)):
        out["snr_db"] = snr_db(float(energy), total)
    return out
