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
    after a full encode measured the real rate (sample vs whole tensor). ``weighted``: per
    sample, the activation-weighted MSE (``rd.sample.measure``'s ``col_weights``), or None;
    ``cost`` is what the rate allocation minimizes — it, when measured, else the MSE.
    """

    qps: list[int]
    bpw: list[float]
    mse: list[float]
    numel: int
    signal_energy: float  # Σx² of the tensor (for SNR)
    rate_scale: float = 1.0
    weighted: list[float] | None = None

    def __post_init__(self) -> None:
        order = np.argsort(self.qps)
        self.qps = [int(self.qps[i]) for i in order]
        self.bpw = [float(self.bpw[i]) for i in order]
        self.mse = _monotone([self.mse[i] for i in order])
        if self.weighted is not None:
            if len(self.weighted) != len(order):
                raise ValueError(f"{len(self.weighted)} weighted MSEs for {len(order)} samples")
            self.weighted = _monotone([self.weighted[i] for i in order])

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

    def cost(self, q: int) -> float:
        """Predicted distortion the allocation weighs at QP ``q``: the activation-weighted
        MSE when it was measured, else the MSE."""
        if self.weighted is None:
            return self.distortion(q)
        return math.exp(min(self._interp(q, [math.log(m) for m in self.weighted]), 700.0))

    def snr_db(self, q: int) -> float:
        mse = self.distortion(q)
        if self.signal_energy <= 0 or self.numel <= 0:
            return math.inf
        return 10 * math.log10(self.signal_energy / (mse * self.numel))

    def to_dict(self) -> dict[str, Any]:
        """Plain data for the index: the samples and the model's description."""
        out: dict[str, Any] = {
            "samples": [[q, b, m] for q, b, m in zip(self.qps, self.bpw, self.mse, strict=True)],
            "model": "piecewise-linear rate and log-MSE in QP, end slopes extrapolated",
            "rate_scale": self.rate_scale,
            "signal_energy": self.signal_energy,
        }
        if self.weighted is not None:
            out["weighted_mse"] = list(self.weighted)
            out["distortion"] = WEIGHTED_DISTORTION
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any], numel: int) -> RDCurve:
        samples = d["samples"]
        weighted = d.get("weighted_mse")
        return cls([s[0] for s in samples], [s[1] for s in samples], [s[2] for s in samples],
                   numel, float(d.get("signal_energy", 0.0)), float(d.get("rate_scale", 1.0)),
                   [float(w) for w in weighted] if isinstance(weighted, list) else None)


#: what an RD record's ``weighted_mse`` is (its ``distortion`` field says so in the archive)
WEIGHTED_DISTORTION = ("activation-weighted MSE per sample: mean of u_j*(x-x^)^2 over the "
                       "matrix, u_j = E[x_j^2]/mean_j E[x_j^2] of the layer's inputs; the "
                       "rate allocation minimized weight * numel * it")


def _monotone(values: list[Any]) -> list[float]:
    """Floats clamped to > 0, non-decreasing in QP (measured noise can make samples cross;
    the allocator needs monotone curves)."""
    out = [max(float(v), 1e-30) for v in values]
    for i in range(1, len(out)):  # monotone: a higher QP never has less distortion
        out[i] = max(out[i], out[i - 1])
    return out
