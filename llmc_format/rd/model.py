"""Per-tensor rate-distortion model: rate and distortion as functions of the QP.

Built from a few measured samples (QP, bits per weight, MSE). Video codecs behave
smoothly in QP: log(MSE) is close to linear (the step size is 2^(QP/6)) and the rate
falls roughly linearly, so the model interpolates ``rate`` linearly and ``log(mse)``
linearly between samples and extrapolates with the end segments' slopes. The rate is
clamped at zero and the MSE is non-decreasing in QP (measured noise can make two
samples cross; the allocator needs monotone curves).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class RDCurve:
    """Measured samples of one tensor and the model through them.

    ``bpw`` counts only the bitstream (the video stage's blobs) per weight; quantization
    parameters are a fixed cost handled by the caller. ``rate_scale`` corrects the model
    after a full encode measured the real rate (sample vs whole tensor).
    """

    qps: list[int]
    bpw: list[float]
    mse: list[float]
    numel: int
    signal_energy: float  # Σx² of the tensor (for SNR)
    rate_scale: float = 1.0

    def __post_init__(self) -> None:
        order = np.argsort(self.qps)
        self.qps = [int(self.qps[i]) for i in order]
        self.bpw = [float(self.bpw[i]) for i in order]
        mse = [max(float(self.mse[i]), 1e-30) for i in order]
        for i in range(1, len(mse)):  # monotone: a higher QP never has less distortion
            mse[i] = max(mse[i], mse[i - 1])
        self.mse = mse

    def _interp(self, q: float, ys: list[float]) -> float:
        xs = self.qps
        if len(xs) == 1:
            return ys[0]
        if q <= xs[0]:
            i = 0
        elif q >= xs[-1]:
            i = len(xs) - 2
        else:
            i = int(np.searchsorted(xs, q, side="right")) - 1
        x0, x1, y0, y1 = xs[i], xs[i + 1], ys[i], ys[i + 1]
        return y0 + (y1 - y0) * (q - x0) / (x1 - x0)

    def rate(self, q: int) -> float:
        """Predicted bitstream bits per weight at QP ``q``."""
        return max(self._interp(q, self.bpw), 0.0) * self.rate_scale

    def distortion(self, q: int) -> float:
        """Predicted MSE at QP ``q``."""
        # extrapolating far beyond the samples must not overflow (exp(710) raises)
        return math.exp(min(self._interp(q, [math.log(m) for m in self.mse]), 700.0))

    def snr_db(self, q: int) -> float:
        mse = self.distortion(q)
        if self.signal_energy <= 0 or self.numel <= 0:
            return math.inf
        return 10 * math.log10(self.signal_energy / (mse * self.numel))

    def to_dict(self) -> dict[str, Any]:
        """Plain data for the index: the samples and the model's description."""
        return {
            "samples": [[q, b, m] for q, b, m in zip(self.qps, self.bpw, self.mse, strict=True)],
            "model": "piecewise-linear rate and log-MSE in QP, end slopes extrapolated",
            "rate_scale": self.rate_scale,
            "signal_energy": self.signal_energy,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], numel: int) -> RDCurve:
        samples = d["samples"]
        return cls([s[0] for s in samples], [s[1] for s in samples], [s[2] for s in samples],
                   numel, float(d.get("signal_energy", 0.0)), float(d.get("rate_scale", 1.0)))
