"""Re-check the measurements behind the affine stage's defaults (see affine.py's docstring).

Marked slow: it quantizes all of MiniLM-L6 (22.7 M weights) several times (~10 s).
"Unit-noise SNR" = weight SNR when each code gets noise of variance 1 (Σx² / Σ count·scale²):
how choices fare once a video codec adds its error in the code domain.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from llmc_format.quant.affine import quantize
from llmc_format.quant.grid import Grid

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def weights(minilm_dir: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return {k: v for k, v in load_file(str(minilm_dir / "model.safetensors")).items()
            if v.dtype.kind == "f"}


def measure(weights: dict[str, np.ndarray], **config) -> dict[str, float]:
    signal = grid_noise = unit_noise = params_bytes = n = 0.0
    for name, x in weights.items():
        q = quantize(x, bits=10, name=name, **config)
        grid = Grid.of(x.shape, config.get("granularity", "row"), config.get("group_size", 128))
        signal += float(np.vdot(x.astype(np.float64), x.astype(np.float64)))
        grid_noise += q.info["grid_mse"] * x.size
        unit_noise += float(np.sum(grid.cell_counts() * q.params.scale.astype(np.float64) ** 2))
        params_bytes += q.info["params_bytes"]
        n += x.size
    return {
        "grid_snr": 10 * math.log10(signal / grid_noise),
        "unit_snr": 10 * math.log10(signal / unit_noise),
        "params_bpw": 8 * params_bytes / n,
    }


def test_two_byte_params_cost_half_and_lose_nothing(weights: dict[str, np.ndarray]) -> None:
    f32 = measure(weights, param_dtype="float32")
    auto = measure(weights)
    bf16 = measure(weights, param_dtype="bfloat16")
    assert f32["grid_snr"] > 54.0
    assert auto["params_bpw"] == pytest.approx(f32["params_bpw"] / 2)
    assert f32["unit_snr"] - auto["unit_snr"] < 0.01
    assert f32["grid_snr"] - auto["grid_snr"] < 0.05
    assert auto["unit_snr"] >= bf16["unit_snr"]  # auto never worse than always-bfloat16


def test_granularity_tradeoffs(weights: dict[str, np.ndarray]) -> None:
    row = measure(weights)
    group = measure(weights, granularity="group", group_size=128)
    tensor = measure(weights, granularity="tensor")
    assert 1.5 < group["unit_snr"] - row["unit_snr"] < 2.5
    assert group["params_bpw"] - row["params_bpw"] == pytest.approx(0.176, abs=0.01)
    assert row["unit_snr"] - tensor["unit_snr"] > 12.0
