"""Choose each tensor's QP: Lagrangian allocation under a rate budget, or a quality floor.

Rate budget (``allocate_rate``): minimize Σ w_i·n_i·D_i(q_i) subject to
Σ n_i·R_i(q_i) ≤ B, with D the MSE per weight, R the bits per weight and n the weight
count. For a multiplier λ each tensor independently picks
q_i(λ) = argmin_q w_i·D_i(q) + λ·R_i(q); total rate falls as λ grows, so a bisection on
log λ finds the smallest λ that fits the budget (Radio's single-multiplier solution).
Integer QPs leave slack under the budget; a greedy pass then spends it on the single-QP
steps with the best distortion decrease per bit until nothing more fits.

Quality floor (``allocate_snr``): each tensor takes the highest QP whose predicted SNR
still meets the target — no trade-off between tensors is involved.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from llmc_format.errors import TargetError
from llmc_format.rd.model import RDCurve


@dataclass
class Allocation:
    qps: dict[str, int]
    lam: float | None
    predicted_bits: float
    predicted_distortion: float  # Σ w·n·D


#: QPs beyond a curve's measured samples it may be used at (end slopes extrapolated)
EXTRAPOLATE = 4


class _Tables:
    """Rate and distortion of every tensor at every QP, as (tensors x QPs) arrays.

    A tensor may only take QPs within ``EXTRAPOLATE`` of its own samples (tensors are
    sampled at different QPs: ``pipeline.target.sample_qps``); elsewhere rate and
    distortion are +inf, so no choice lands there.
    """

    def __init__(self, curves: Mapping[str, RDCurve], weights: Mapping[str, float], qrange: range):
        self.names = list(curves)
        self.q = np.array(list(qrange))
        self.n = np.array([curves[k].numel for k in self.names], dtype=np.float64)
        self.w = np.array([weights.get(k, 1.0) for k in self.names], dtype=np.float64)
        lo = np.array([curves[k].qps[0] - EXTRAPOLATE for k in self.names])
        hi = np.array([curves[k].qps[-1] + EXTRAPOLATE for k in self.names])
        self.valid = (self.q[None, :] >= lo[:, None]) & (self.q[None, :] <= hi[:, None])
        for k, ok in zip(self.names, self.valid.any(axis=1), strict=True):
            if not ok:
                raise TargetError(f"tensor {k!r}: its RD samples (QPs {curves[k].qps}) lie "
                                  f"outside the codec's QPs {qrange[0]}..{qrange[-1]}")
        self.rate = np.array([[curves[k].rate(int(q)) if v else np.inf
                               for q, v in zip(self.q, vs, strict=True)]
                              for k, vs in zip(self.names, self.valid, strict=True)])
        self.dist = np.array([[curves[k].distortion(int(q)) if v else np.inf
                               for q, v in zip(self.q, vs, strict=True)]
                              for k, vs in zip(self.names, self.valid, strict=True)])
        #: per tensor, the index of its coarsest allowed QP
        self.coarsest = len(self.q) - 1 - np.argmax(self.valid[:, ::-1], axis=1)

    def choose(self, lam: float) -> np.ndarray:
        with np.errstate(invalid="ignore"):
            cost = np.where(self.valid, self.w[:, None] * self.dist + lam * self.rate, np.inf)
        # argmin over QPs; on ties prefer the highest QP (fewest bits): search reversed
        return len(self.q) - 1 - np.argmin(cost[:, ::-1], axis=1)

    def bits(self, idx: np.ndarray) -> float:
        return float(np.sum(self.n * self.rate[np.arange(len(idx)), idx]))

    def distortion(self, idx: np.ndarray) -> float:
        return float(np.sum(self.w * self.n * self.dist[np.arange(len(idx)), idx]))

    def allocation(self, idx: np.ndarray, lam: float | None) -> Allocation:
        return Allocation({k: int(self.q[i]) for k, i in zip(self.names, idx, strict=True)},
                          lam, self.bits(idx), self.distortion(idx))


def min_bits(curves: Mapping[str, RDCurve], qrange: range) -> float:
    """The fewest bits the lossy tensors can take: every one at its coarsest allowed QP."""
    if not curves:
        return 0.0
    t = _Tables(curves, {}, qrange)
    return float(t.bits(t.coarsest.copy()))


def allocate_rate(curves: Mapping[str, RDCurve], budget_bits: float, qrange: range,
                  weights: Mapping[str, float] | None = None) -> Allocation:
    """QPs minimizing weighted distortion with total predicted bits ≤ ``budget_bits``."""
    if not curves:
        return Allocation({}, None, 0.0, 0.0)
    t = _Tables(curves, weights or {}, qrange)
    coarsest = t.coarsest.copy()
    if t.bits(coarsest) > budget_bits:
        raise TargetError(
            f"the target leaves {budget_bits / 8:,.0f} bytes for the lossy tensors, but even "
            f"the coarsest QPs need about {t.bits(coarsest) / 8:,.0f}: ask for a "
            "larger size or keep fewer tensors lossy"
        )
    lo, hi = -60.0, 60.0  # bounds on log λ: distortion per bit spans many decades
    best, best_lam = coarsest, float(np.exp(hi))
    for _ in range(80):
        mid = (lo + hi) / 2
        idx = t.choose(float(np.exp(mid)))
        if t.bits(idx) <= budget_bits:
            best, best_lam, hi = idx, float(np.exp(mid)), mid
        else:
            lo = mid
    return t.allocation(_greedy_fill(t, best.copy(), budget_bits), best_lam)


def _greedy_fill(t: _Tables, idx: np.ndarray, budget_bits: float) -> np.ndarray:
    """Spend leftover budget on the one-QP decrements with the best ΔD/ΔR."""
    bits = t.bits(idx)
    rows = np.arange(len(idx))
    while True:
        can = idx > 0
        prev = np.maximum(idx - 1, 0)
        with np.errstate(invalid="ignore"):  # inf - inf where the finer QP is not allowed
            cost = t.n * (t.rate[rows, prev] - t.rate[rows, idx])
            gain = t.w * t.n * (t.dist[rows, idx] - t.dist[rows, prev])
            ok = can & np.isfinite(cost) & (cost > 0) & (gain > 0) & (bits + cost <= budget_bits)
        if not ok.any():
            return idx
        ratio = np.where(ok, gain / np.where(ok, cost, 1), -np.inf)
        k = int(np.argmax(ratio))
        idx[k] -= 1
        bits += float(cost[k])


def allocate_snr(curves: Mapping[str, RDCurve], snr_db: float, qrange: range) -> Allocation:
    """The highest QP per tensor whose predicted SNR is at least ``snr_db``."""
    t = _Tables(curves, {}, qrange)  # refuses curves sampled outside ``qrange``
    idx = []
    for k, valid in zip(t.names, t.valid, strict=True):
        allowed = np.flatnonzero(valid)
        ok = [i for i in allowed if curves[k].snr_db(int(t.q[i])) >= snr_db]
        idx.append(max(ok) if ok else allowed[0])
    return t.allocation(np.array(idx), None)
