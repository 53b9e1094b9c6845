"""Column weights and diagscale multipliers from a layer's input power."""

from __future__ import annotations

import numpy as np
import pytest

from llmc_format.rd.activation import CLIP, column_multipliers, column_weights, plan_for


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
