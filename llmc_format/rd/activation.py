"""Activation-aware coding: from calibration statistics to column multipliers and weights.

A linear layer's output error is (W − Ŵ)·x, so an error on column j of W reaches the
output scaled by the input channel x_j: its cost is E[x_j²]·ΔW_ij², not ΔW_ij² (the
observation behind AWQ, GPTQ, SqueezeLLM and llama.cpp's importance matrix). Two things
follow, both computed here from ``rd.calibration.Statistics.input_power`` (E[x_j²]):

- **column weights** u_j = E[x_j²] / mean_j E[x_j²] (mean 1): the RD samples measure the
  *activation-weighted* MSE mean u_j·ΔW_ij² (``rd.sample.measure``), which the allocator
  minimizes, weighted per tensor by its mean Fisher w_i as before. The normalisation
  keeps w_i·D_i ≈ Σ_ij F_ij·ΔW_ij² when the Fisher factors as F_ij ∝ E[x_j²]·(row term)
  (its K-FAC form), so the per-tensor weights stay what they were;
- **column multipliers** for the ``diagscale`` stage (``codecs/diagscale.py``): the codec
  codes W·diag(1/c), decoding multiplies by c_j = 1/s_j with
  s_j = clip((E[x_j²]/mean)^α): a codec that spreads its error evenly over what it codes
  then leaves column j an error ∝ 1/s_j², less on the columns that meet large inputs.
  α = 0.5 would equalise the activation-weighted error per column (high-rate theory's
  optimum), but LLM inputs have outlier channels (hundreds of times the mean power) and
  one quantization scale per tensor: their magnified columns widen the code range and
  coarsen every other column's step. ``ALPHA`` is therefore below 0.5, chosen by the
  perplexity of whole packs (``research/probe_actscale.py``; figures in
  docs/results/actscale.md), not by theory.

Columns whose inputs are (nearly) silent get the largest multiplier; ``CLIP`` bounds the
ratio so the multipliers stay normal binary16 values and no column's error explodes.

The multipliers are the statistics up to a known transform, so ``weights_from_multipliers``
recovers the column weights from them (``repack``, which has the archive but not the
statistics): exactly up to binary16 rounding (relative error ≤ 2·2⁻¹¹/α, 0.28% at
α = 0.35: the entry's rounding and the mean's it is scaled by) for every column the clip
did not touch. A column clipped at the low end (u_j below CLIP^(−1/α) ≈ 7·10⁻⁶, an almost
silent input) gets that bound instead of its true u_j; one clipped at the top would need
u_j above CLIP^(1/α) ≈ 1.5·10⁵, more than the C of any layer with fewer input channels
can reach (u_j ≤ C since the mean is 1).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

#: exponent of the column importance: s_j = (E[x_j²]/mean)^ALPHA (measured, see module doc)
ALPHA = 0.35
#: s_j is clipped to [1/CLIP, CLIP]: binary16 holds the multipliers 1/s exactly enough,
#: and a dead input channel still gets a bounded error
CLIP = 64.0
#: relative input power below which a channel counts as silent (floors u and s)
FLOOR = 1e-8


def column_weights(power: np.ndarray) -> np.ndarray:
    """u_j = E[x_j²] / mean E[x²] (float64, mean 1; silent channels floored at ``FLOOR``)."""
    p = np.asarray(power, dtype=np.float64).reshape(-1)
    mean = float(p.mean()) if p.size else 0.0
    if not (mean > 0 and np.all(np.isfinite(p))):
        return np.ones_like(p)
    return np.maximum(p / mean, FLOOR)


def column_multipliers(power: np.ndarray, alpha: float = ALPHA, clip: float = CLIP) -> np.ndarray:
    """c_j = 1/s_j, the factors ``diagscale`` decoding multiplies column j by (float64)."""
    s = np.clip(column_weights(power) ** alpha, 1.0 / clip, clip)
    return 1.0 / s


def weights_from_multipliers(cols: np.ndarray, alpha: float = ALPHA, clip: float = CLIP
                             ) -> np.ndarray:
    """The column weights u_j (float64, mean 1) that ``column_multipliers(power, alpha,
    clip)`` came from, recovered from the multipliers c_j alone: u_j ∝ c_j^(−1/α).

    Exact up to the multipliers' binary16 rounding where the clip did not act; a column
    at the low clip bound gets the bound (see the module docstring). The vector is then
    scaled to mean 1 as ``column_weights`` is: only the clipped columns move the mean, by
    at most CLIP^(−1/α) each. ValueError for ``alpha`` ≤ 0 (the multipliers are then all 1
    and say nothing about the inputs) or multipliers that are not finite and > 0.
    """
    if not alpha > 0:
        raise ValueError(f"alpha {alpha!r}: multipliers made with alpha <= 0 carry no statistics")
    c = np.asarray(cols, dtype=np.float64).reshape(-1)
    if c.size == 0 or not np.all(np.isfinite(c)) or np.any(c <= 0):
        raise ValueError("multipliers must be finite and > 0")
    s = np.clip(1.0 / c, 1.0 / clip, clip)
    u = s ** (1.0 / alpha)
    return np.maximum(u / u.mean(), FLOOR)


def plan_for(input_power: Mapping[str, np.ndarray], names: Iterable[str],
             shapes: Mapping[str, tuple[int, ...]], alpha: float = ALPHA
             ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """For the tensors ``names`` with a measured input power of the right length (2-D
    weights of ``nn.Linear`` layers): the ``Policy.diagscale`` entries ``(cols, None)``
    (none when ``alpha`` is 0) and the column weights of their RD samples."""
    scales: dict[str, Any] = {}
    weights: dict[str, np.ndarray] = {}
    for n in names:
        p = input_power.get(n)
        shape = shapes.get(n, ())
        if p is None or len(shape) != 2 or np.size(p) != shape[1]:
            continue
        weights[n] = column_weights(p)
        if alpha > 0:
            scales[n] = (column_multipliers(p, alpha), None)
    return scales, weights
