"""Choose each tensor's QP: Lagrangian allocation under a rate budget, or a quality floor.

Rate budget (``allocate_rate``): minimize Σ w_i·n_i·D_i(q_i) subject to
Σ n_i·R_i(q_i) ≤ B, with D the MSE per weight (the activation-weighted MSE when the
curve measured one: ``RDCurve.cost``), R the bits per weight and n the weight
count. For a multiplier λ each tensor independently picks
q_i(λ) = argmin_q w_i·D_i(q) + λ·R_i(q); total rate falls as λ grows, so a bisection on
log λ finds the smallest λ that fits the budget (Radio's single-multiplier solution).
Integer QPs leave slack under the budget; a greedy pass then spends it on the single-QP
steps with the best distortion decrease per bit until nothing more fits.

Quality floor (``allocate_snr``): each tensor takes the highest QP whose predicted SNR
still meets the target — no trade-off between tensors is involved.

Keeping a tensor exact is one more choice (``exact_bits``): zero distortion at the rate of
its lossless storage in its source encoding (a Q8_0 embedding's own blocks, bf16's exact
codec). The allocator weighs it like any QP, so a budget at or above the source's size
keeps everything exact, and a tight one mixes exact and lossy tensors. ``fixed_bits`` are
bits a tensor spends only when lossy whatever its QP (its quantization parameters), so
that the exact/lossy comparison counts them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from llmc_format.errors import TargetError
from llmc_format.rd.model import RDCurve


@dataclass
class Allocation:
    qps: dict[str, int]  # the tensors coded lossy, at their QP
    lam: float | None
    predicted_bits: float
    predicted_distortion: float  # Σ w·n·D
    exact: frozenset[str] = frozenset()  # the tensors kept exact (zero distortion)

    def choice(self, name: str) -> int | None:
        """``name``'s QP, or None when it is kept exact."""
        return None if name in self.exact else self.qps[name]


#: QPs beyond a curve's measured samples it may be used at (end slopes extrapolated)
EXTRAPOLATE = 4


class _Tables:
    """Rate and distortion of every tensor under every choice, as (tensors x choices) arrays.

    Choice 0 is "exact" (rate ``exact_bits / n``, zero distortion; +inf rate for a tensor
    without that option), choice ``i ≥ 1`` is QP ``q[i - 1]``. A tensor may only take QPs
    within ``EXTRAPOLATE`` of its own samples (tensors are sampled at different QPs:
    ``pipeline.target.sample_qps``), and none below its ``floors`` entry (the codec failed
    finer: ``rd.sample.Measured.floor_qp``); elsewhere rate and distortion are +inf, so no
    choice lands there. Rates are bits per weight, ``fixed_bits / n`` included in every QP.
    """

    def __init__(self, curves: Mapping[str, RDCurve], weights: Mapping[str, float], qrange: range,
                 exact_bits: Mapping[str, float] | None = None,
                 fixed_bits: Mapping[str, float] | None = None,
                 floors: Mapping[str, int] | None = None):
        exact_bits, fixed_bits, floors = exact_bits or {}, fixed_bits or {}, floors or {}
        self.names = list(curves)
        self.q = np.array(list(qrange))
        self.n = np.array([curves[k].numel for k in self.names], dtype=np.float64)
        self.w = np.array([weights.get(k, 1.0) for k in self.names], dtype=np.float64)
        lo = np.array([max(curves[k].qps[0] - EXTRAPOLATE, floors.get(k, qrange[0]))
                       for k in self.names])
        hi = np.array([curves[k].qps[-1] + EXTRAPOLATE for k in self.names])
        valid = (self.q[None, :] >= lo[:, None]) & (self.q[None, :] <= hi[:, None])
        for k, ok in zip(self.names, valid.any(axis=1), strict=True):
            if not ok:
                raise TargetError(f"tensor {k!r}: its RD samples (QPs {curves[k].qps}) lie "
                                  f"outside the codec's QPs {qrange[0]}..{qrange[-1]}")
        fixed = np.array([fixed_bits.get(k, 0.0) for k in self.names]) / np.maximum(self.n, 1)
        rate = np.array([[curves[k].rate(int(q)) if v else np.inf
                          for q, v in zip(self.q, vs, strict=True)]
                         for k, vs in zip(self.names, valid, strict=True)]) + fixed[:, None]
        dist = np.array([[curves[k].cost(int(q)) if v else np.inf
                          for q, v in zip(self.q, vs, strict=True)]
                         for k, vs in zip(self.names, valid, strict=True)])
        exact = np.array([exact_bits.get(k, np.inf) for k in self.names]) / np.maximum(self.n, 1)
        self.valid = np.column_stack([np.isfinite(exact), valid])
        self.rate = np.column_stack([exact, rate])
        self.dist = np.column_stack([np.where(np.isfinite(exact), 0.0, np.inf), dist])
        #: per tensor, the index of its cheapest allowed choice
        self.cheapest = np.argmin(np.where(self.valid, self.rate, np.inf)[:, ::-1], axis=1)
        self.cheapest = self.rate.shape[1] - 1 - self.cheapest

    def choose(self, lam: float) -> np.ndarray:
        with np.errstate(invalid="ignore"):
            cost = np.where(self.valid, self.w[:, None] * self.dist + lam * self.rate, np.inf)
        # argmin over choices; on ties prefer the highest QP (fewest bits): search reversed
        return self.rate.shape[1] - 1 - np.argmin(cost[:, ::-1], axis=1)

    def bits(self, idx: np.ndarray) -> float:
        return float(np.sum(self.n * self.rate[np.arange(len(idx)), idx]))

    def distortion(self, idx: np.ndarray) -> float:
        return float(np.sum(self.w * self.n * self.dist[np.arange(len(idx)), idx]))

    def allocation(self, idx: np.ndarray, lam: float | None) -> Allocation:
        pairs = list(zip(self.names, idx, strict=True))
        return Allocation({k: int(self.q[i - 1]) for k, i in pairs if i > 0}, lam,
                          self.bits(idx), self.distortion(idx),
                          frozenset(k for k, i in pairs if i == 0))


def min_bits(curves: Mapping[str, RDCurve], qrange: range,
             floors: Mapping[str, int] | None = None) -> float:
    """The fewest bits the lossy tensors can take: every one at its coarsest allowed QP."""
    if not curves:
        return 0.0
    t = _Tables(curves, {}, qrange, floors=floors)
    return float(t.bits(t.cheapest.copy()))


def allocate_rate(curves: Mapping[str, RDCurve], budget_bits: float, qrange: range,
                  weights: Mapping[str, float] | None = None, *,
                  exact_bits: Mapping[str, float] | None = None,
                  fixed_bits: Mapping[str, float] | None = None,
                  floors: Mapping[str, int] | None = None) -> Allocation:
    """Choices minimizing weighted distortion with total predicted bits ≤ ``budget_bits``.

    ``exact_bits``: the bits of each tensor kept exact (a tensor not named has no exact
    choice); ``fixed_bits``: bits each tensor spends when lossy on top of its bitstream;
    ``floors``: the lowest QP each named tensor may take.
    """
    if not curves:
        return Allocation({}, None, 0.0, 0.0)
    t = _Tables(curves, weights or {}, qrange, exact_bits, fixed_bits, floors)
    cheapest = t.cheapest.copy()
    if t.bits(cheapest) > budget_bits:
        raise TargetError(
            f"the target leaves {budget_bits / 8:,.0f} bytes for the lossy tensors, but even "
            f"the coarsest QPs need about {t.bits(cheapest) / 8:,.0f}: ask for a "
            "larger size or keep fewer tensors lossy"
        )
    lo, hi = -60.0, 60.0  # bounds on log λ: distortion per bit spans many decades
    best, best_lam = cheapest, float(np.exp(hi))
    for _ in range(80):
        mid = (lo + hi) / 2
        idx = t.choose(float(np.exp(mid)))
        if t.bits(idx) <= budget_bits:
            best, best_lam, hi = idx, float(np.exp(mid)), mid
        else:
            lo = mid
    return t.allocation(_greedy_fill(t, best.copy(), budget_bits), best_lam)


def _greedy_fill(t: _Tables, idx: np.ndarray, budget_bits: float) -> np.ndarray:
    """Spend leftover budget on the moves with the best ΔD/ΔR: one tensor to any of its
    choices with less distortion and more bits (a finer QP, or exact) that still fits."""
    bits = t.bits(idx)
    rows = np.arange(len(idx))
    nn = t.n[:, None]
    while True:
        with np.errstate(invalid="ignore"):  # inf - inf where a choice is not allowed
            cost = nn * (t.rate - t.rate[rows, idx][:, None])
            gain = t.w[:, None] * nn * (t.dist[rows, idx][:, None] - t.dist)
            ok = (t.valid & np.isfinite(cost) & np.isfinite(gain) & (cost > 0) & (gain > 0)
                  & (bits + cost <= budget_bits))
        if not ok.any():
            return idx
        ratio = np.where(ok, gain / np.where(ok, cost, 1), -np.inf)
        k, j = np.unravel_index(int(np.argmax(ratio)), ratio.shape)
        idx[k] = j
        bits += float(cost[k, j])


def allocate_snr(curves: Mapping[str, RDCurve], snr_db: float, qrange: range, *,
                 exact_bits: Mapping[str, float] | None = None,
                 fixed_bits: Mapping[str, float] | None = None,
                 floors: Mapping[str, int] | None = None) -> Allocation:
    """Per tensor, the cheapest choice whose predicted SNR is at least ``snr_db``: the
    highest such QP, or exact when that costs fewer bits (or no QP reaches the floor)."""
    t = _Tables(curves, {}, qrange, exact_bits, fixed_bits, floors)  # refuses curves outside ``qrange``
    idx = []
    for row, (k, valid) in enumerate(zip(t.names, t.valid, strict=True)):
        allowed = np.flatnonzero(valid[1:]) + 1
        ok = [i for i in allowed if curves[k].snr_db(int(t.q[i - 1])) >= snr_db]
        pick = max(ok) if ok else int(allowed[0])
        if valid[0] and (not ok or t.rate[row, 0] <= t.rate[row, pick]):
            pick = 0
        idx.append(pick)
    return t.allocation(np.array(idx), None)
