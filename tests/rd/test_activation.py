"""Column weights and diagscale multipliers from a layer's input power."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmc_format.codecs.diagscale import DiagScales
from llmc_format.rd.activation import (
    ALPHA,
    CLIP,
    FLOOR,
    column_multipliers,
    column_weights,
    plan_for,
    weights_from_multipliers,
)


def test_weights_have_mean_one_and_multipliers_follow_alpha() -> None:
    p = np.array([4.0, 1.0, 0.25, 0.0])
    u = column_weights(p)
    assert u[:3] == pytest.approx(p[:3] / p.mean()) and u[3] > 0  # a silent channel: floored
    c = column_multipliers(p, alpha=0.5)
    assert c[0] * np.sqrt(u[0]) == pytest.approx(1.0)  # c_j = (E[x_j²]/mean)^-alpha
    assert c[1] / c[0] == pytest.approx(2.0)
    assert c[3] == pytest.approx(CLIP)  # clipped: a dead channel's error stays bounded
    assert np.all(column_multipliers(p, alpha=0.0) == 1.0)
    assert np.all(column_weights(np.zeros(3)) == 1.0)  # nothing measured: plain MSE


def test_plan_takes_2d_tensors_with_matching_power_only() -> None:
    power = {"a": np.ones(4) * 2, "b": np.ones(3), "c": np.ones(5)}
    shapes = {"a": (8, 4), "b": (8, 4), "c": (5,), "d": (2, 2)}
    scales, weights = plan_for(power, shapes, shapes, alpha=0.5)
    assert set(scales) == set(weights) == {"a"}
    cols, rows = scales["a"]
    assert rows is None and cols == pytest.approx(np.ones(4))
    scales, weights = plan_for(power, shapes, shapes, alpha=0.0)
    assert scales == {} and set(weights) == {"a"}


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(1e-12, 1e6), min_size=1, max_size=64),
       st.sampled_from([ALPHA, 0.25, 0.5]))
def test_weights_recovered_from_stored_multipliers(power: list[float], alpha: float) -> None:
    """What ``repack`` derives from an archive: the column weights back from the binary16
    multipliers — within binary16 rounding (2^-11 relative on c, 1/alpha times that on u,
    as much again through the mean it is scaled by) wherever the clip did not act; a
    clipped column gets the bound."""
    p = np.array(power)
    u = column_weights(p)
    stored = DiagScales(column_multipliers(p, alpha), None).cols  # what the blob holds
    v = weights_from_multipliers(stored.astype(np.float32), alpha)
    assert v.shape == u.shape and v.mean() == pytest.approx(1.0)
    low, high = CLIP ** (-1 / alpha), CLIP ** (1 / alpha)
    inside = (u > low * 1.01) & (u < high / 1.01)
    clipped = (u < low) | (u > high)
    # the mean moves only by the clipped columns (each at most `low`)
    shift = abs(np.sum(np.maximum(u, low)[clipped] - u[clipped])) / u.size
    tol = 2 * 2.0 ** -11 / alpha * 1.01 + 2 * shift / (1 - shift)  # entry's and mean's rounding
    assert np.all(np.abs(v[inside] / u[inside] - 1) <= tol + 1e-12)
    lowc = u < low / 1.01
    if lowc.any():  # one value for them all (the bound), above their true weights
        assert np.all(v[lowc] == pytest.approx(v[lowc][0])) and np.all(v[lowc] >= u[lowc])
    assert np.all(v >= FLOOR)


def test_weights_from_multipliers_refuses_what_carries_no_statistics() -> None:
    with pytest.raises(ValueError):
        weights_from_multipliers(np.ones(3), alpha=0.0)
    with pytest.raises(ValueError):
        weights_from_multipliers(np.array([1.0, -1.0]))
    with pytest.raises(ValueError):
        weights_from_multipliers(np.array([]))
