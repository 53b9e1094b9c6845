"""RD records are validated before anything computes with them (issue 17)."""

from __future__ import annotations

import math

import pytest

from llmc_format.errors import FormatError
from llmc_format.rd.records import check_rd, qp_range_of, rd_problem, summary_problem

GOOD = {"samples": [[22, 4.1, 1e-6], [29, 2.9, 4e-6], [36, 1.8, 2e-5]], "signal_energy": 3.0,
        "rate_scale": 1.0, "qp": 30, "chosen_qp": 30, "bpw": 2.8, "mse": 5e-6, "snr_db": 20.5,
        "predicted_bpw": 2.7, "model": "piecewise-linear"}


def test_a_real_record_passes() -> None:
    assert rd_problem(GOOD, (0, 63)) is None
    assert rd_problem({"bytes": 453, "bpw": 7.0, "snr_db": math.inf}, (0, 63)) is None
    assert check_rd(GOOD, (0, 63), "w") is GOOD
    assert rd_problem({**GOOD, "weighted_mse": [2e-6, 5e-6, 3e-5]}, (0, 63)) is None


@pytest.mark.parametrize(("change", "why"), [
    ({"samples": [[22, math.nan, 1e-6]]}, "finite"),
    ({"samples": [[22, 1.0, math.inf]]}, "finite"),
    ({"samples": [[22, 1.0, 1e-6], [22, 0.5, 2e-6]]}, "twice"),
    ({"samples": [[22.5, 1.0, 1e-6]]}, "integer"),
    ({"samples": [[99, 1.0, 1e-6]]}, "integer in"),
    ({"samples": [[22, 1.0]]}, "qp, bpw, mse"),
    ({"samples": []}, "non-empty"),
    ({"samples": "x"}, "non-empty"),
    ({"qp": "30"}, "qp"),
    ({"qp": True}, "qp"),
    ({"chosen_qp": -1}, "chosen_qp"),
    ({"signal_energy": -1.0}, "signal_energy"),
    ({"mse": math.nan}, "mse"),
    ({"rate_scale": 0.0}, "rate_scale"),
    ({"snr_db": math.nan}, "snr_db"),
    ({"bpw": "fast"}, "bpw"),
    ({"weighted_mse": [1e-6, 2e-6]}, "weighted_mse"),
    ({"weighted_mse": [1e-6, math.nan, 3e-6]}, "weighted_mse"),
    ({"weighted_mse": "x"}, "weighted_mse"),
])
def test_bad_records_are_named(change: dict, why: str) -> None:
    rd = {**GOOD, **change}
    assert why in (rd_problem(rd, (0, 63)) or "")
    with pytest.raises(FormatError, match="tensor 'w': invalid RD record"):
        check_rd(rd, (0, 63), "w")


def test_summary_and_qp_ranges() -> None:
    assert summary_problem({"target": {"kind": "bpw", "value": 3.0}, "lambda": 1e-3,
                            "passes": 2}) is None
    assert summary_problem({"target": "bpw"}) is not None
    assert summary_problem({"target": {"kind": "bpw", "value": math.nan}}) is not None
    assert summary_problem([1]) is not None
    assert qp_range_of(({"id": "affine"}, {"id": "hevc"})) == (0, 51)
    assert qp_range_of(({"id": "nope"},)) == (0, 63)
    assert qp_range_of("junk") == (0, 63)
