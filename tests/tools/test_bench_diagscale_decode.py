"""tools/bench_diagscale_decode.py: the decode with and without the stage is timed, and undone."""

from __future__ import annotations

import numpy as np

from tools.bench_diagscale_decode import bench_tensor, stand_in_scales


def test_bench_tensor_times_both_pipelines_on_a_small_tensor() -> None:
    w = (np.random.default_rng(0).standard_normal((64, 96)) * 0.02).astype(np.float32)
    c, r = stand_in_scales(w)
    assert c.shape == (96,) and r.shape == (64,)
    assert abs(float(np.mean(np.log(c)))) < 1e-9  # geometric mean 1
    row = bench_tensor("w", w, {"id": "hevc", "qp": 22, "preset": "ultrafast"}, repeat=1)
    assert row["weights"] == w.size
    assert row["vector_bytes"] == 2 * (64 + 96) and row["bytes"] > row["vector_bytes"]
    for key in ("decode_wall_without", "decode_wall_with", "stage_alone_wall"):
        assert row[key] > 0
    # the decode with the stage is close to the weights: the stage is undone at decode
    assert row["mse"] < float(np.mean(w.astype(np.float64) ** 2)) / 100
