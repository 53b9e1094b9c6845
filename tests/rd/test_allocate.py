"""Lagrangian QP allocation: each tensor stays within reach of its own RD samples."""

from __future__ import annotations

import numpy as np
import pytest

from llmc_format.errors import TargetError
from llmc_format.rd.allocate import EXTRAPOLATE, allocate_rate, allocate_snr
from llmc_format.rd.model import RDCurve


def curve(qps: list[int], offset: float, numel: int = 1000) -> RDCurve:
    """A synthetic curve: rate falls 1/7 bit per QP, MSE doubles every 6 QP, shifted."""
    return RDCurve(qps, [max(0.0, (50 - q - offset) / 7) for q in qps],
                   [2.0 ** ((q + offset) / 6) * 1e-6 for q in qps], numel, 1.0)


QRANGE = range(0, 64)


def test_each_tensor_is_allocated_within_its_sample_span() -> None:
    curves = {"low": curve([4, 11, 18, 25], offset=18), "high": curve([22, 29, 36, 43], 0)}
    for budget in (1500.0, 3000.0, 6000.0):
        alloc = allocate_rate(curves, budget, QRANGE)
        assert alloc.predicted_bits <= budget
        for name, c in curves.items():
            assert c.qps[0] - EXTRAPOLATE <= alloc.qps[name] <= c.qps[-1] + EXTRAPOLATE
    # equal weights, the same curve shape shifted by 18 QP: equal slopes, QPs 18 apart
    alloc = allocate_rate(curves, 3000.0, QRANGE)
    assert alloc.qps["high"] - alloc.qps["low"] == pytest.approx(18, abs=1)


def test_budget_below_the_coarsest_allowed_qps_is_refused() -> None:
    curves = {"a": curve([22, 29, 36, 43], 0)}
    coarsest_bits = 1000 * curves["a"].rate(43 + EXTRAPOLATE)
    allocate_rate(curves, coarsest_bits + 1, QRANGE)
    with pytest.raises(TargetError, match="coarsest"):
        allocate_rate(curves, coarsest_bits * 0.9, QRANGE)


def test_snr_floor_uses_each_tensors_span() -> None:
    curves = {"low": curve([4, 11, 18, 25], offset=18), "high": curve([22, 29, 36, 43], 0)}
    alloc = allocate_snr(curves, 15.0, QRANGE)
    for name, c in curves.items():
        assert c.snr_db(alloc.qps[name]) >= 15.0
        assert c.qps[0] - EXTRAPOLATE <= alloc.qps[name] <= c.qps[-1] + EXTRAPOLATE
    with pytest.raises(TargetError, match="outside"):
        allocate_snr({"x": curve([70, 80], 0)}, 30.0, QRANGE)
    assert np.isfinite(alloc.predicted_distortion)


def test_exact_is_a_choice_at_zero_distortion() -> None:
    """With exact storage priced, a budget that covers it keeps a tensor exact, a budget
    that does not codes it lossy, and a tensor whose exact storage is cheaper than its
    useful QPs (a natively quantized one) stays exact even under a tight budget."""
    curves = {"a": curve([22, 29, 36, 43], 0), "b": curve([22, 29, 36, 43], 0)}
    exact = {"a": 1000 * 6.0, "b": 1000 * 6.0}  # 6 bits per weight kept exact
    roomy = allocate_rate(curves, 12_500.0, QRANGE, exact_bits=exact)
    assert roomy.exact == {"a", "b"} and roomy.qps == {} and roomy.predicted_distortion == 0
    assert roomy.choice("a") is None
    tight = allocate_rate(curves, 4_000.0, QRANGE, exact_bits=exact)
    assert tight.exact == frozenset() and set(tight.qps) == {"a", "b"}
    assert tight.predicted_bits <= 4_000.0
    # "a" costs 1.5 bits per weight exact: cheaper than any QP worth having -> exact
    mixed = allocate_rate(curves, 4_000.0, QRANGE, exact_bits={"a": 1500.0, "b": 1000 * 6.0})
    assert mixed.exact == {"a"} and set(mixed.qps) == {"b"}
    assert mixed.predicted_bits <= 4_000.0
    # the exact choice gives "b" more bits than it had without it
    assert curves["b"].rate(mixed.qps["b"]) > curves["b"].rate(tight.qps["b"])


def test_fixed_bits_count_against_lossy_choices_only() -> None:
    curves = {"a": curve([22, 29, 36, 43], 0)}
    budget = 1000 * curves["a"].rate(30) + 10
    plain = allocate_rate(curves, budget, QRANGE)
    # 1 bit per weight of quantization parameters: the same budget buys a coarser QP...
    taxed = allocate_rate(curves, budget, QRANGE, fixed_bits={"a": 1000.0})
    assert taxed.qps["a"] > plain.qps["a"] and taxed.predicted_bits <= budget
    # ...or exact storage, when that fits and lossy pays the tax
    exact = allocate_rate(curves, budget, QRANGE, exact_bits={"a": budget - 5},
                          fixed_bits={"a": 1000.0})
    assert exact.exact == {"a"}


def test_snr_floor_takes_exact_when_cheaper_or_when_no_qp_reaches_it() -> None:
    curves = {"a": curve([22, 29, 36, 43], 0), "b": curve([22, 29, 36, 43], 0)}
    lossy = allocate_snr(curves, 15.0, QRANGE)
    q = lossy.qps["a"]
    cheap = allocate_snr(curves, 15.0, QRANGE,
                         exact_bits={"a": 1000 * curves["a"].rate(q) - 1, "b": 1e9})
    assert cheap.exact == {"a"} and cheap.qps == {"b": q}
    unreachable = allocate_snr(curves, 500.0, QRANGE, exact_bits={"a": 1e9})
    assert unreachable.exact == {"a"} and "b" in unreachable.qps


def test_rate_allocation_minimizes_the_weighted_distortion_when_measured() -> None:
    """Two tensors with the same MSE curves, but one's activation-weighted MSE is 16x its
    MSE (its error lands on the columns that meet large inputs): it gets the finer QP; the
    SNR floor still works from the plain MSE."""
    a, b = curve([22, 29, 36, 43], 0), curve([22, 29, 36, 43], 0)
    b.weighted = [m * 16 for m in b.mse]
    assert b.cost(30) == pytest.approx(16 * b.distortion(30))
    assert a.cost(30) == a.distortion(30)
    alloc = allocate_rate({"a": a, "b": b}, 3000.0, QRANGE)
    # equal slopes would put them 24 QPs apart (16x = 4 doublings), the sample spans allow less
    assert alloc.qps["a"] - alloc.qps["b"] >= 12
    plain = allocate_rate({"a": a, "b": curve([22, 29, 36, 43], 0)}, 3000.0, QRANGE)
    assert abs(plain.qps["a"] - plain.qps["b"]) <= 1
    snr = allocate_snr({"a": a, "b": b}, 20.0, QRANGE)
    assert snr.qps["a"] == snr.qps["b"]
    again = RDCurve.from_dict(b.to_dict(), b.numel)
    assert again.weighted == b.weighted and again.to_dict()["distortion"]


def test_floors_bound_the_finest_qp() -> None:
    """A tensor with a floor (its codec failed finer) never gets a QP under it, however
    large the budget; the budget then goes to the others, or stays unspent."""
    curves = {"a": curve([22, 29, 36, 43], 0), "b": curve([22, 29, 36, 43], 0)}
    free = allocate_rate(curves, 1e9, QRANGE)
    assert free.qps == {"a": 22 - EXTRAPOLATE, "b": 22 - EXTRAPOLATE}
    floored = allocate_rate(curves, 1e9, QRANGE, floors={"a": 25})
    assert floored.qps == {"a": 25, "b": 22 - EXTRAPOLATE}
    assert floored.predicted_bits < free.predicted_bits
    snr = allocate_snr(curves, 60.0, QRANGE, floors={"b": 24})  # a floor no QP meets
    assert snr.qps["b"] == 24 and snr.qps["a"] == 22 - EXTRAPOLATE
