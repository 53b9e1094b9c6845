"""tools/bench_lossy: the tuned video path and the comparison at equal rate."""

from __future__ import annotations

import numpy as np
import pytest

from tools.bench_lossy import Run, TensorResult, at_rates, equal_step_qp, run_video


def test_equal_step_qp_is_six_per_octave() -> None:
    w = np.linspace(0, 1023 * 2.0**-8, 64, dtype=np.float32)  # scale exactly 2^-8 per code
    assert equal_step_qp(w, 30) == 30
    assert equal_step_qp(w * 2, 30) == 24  # twice the range: 6 QP finer for the same step
    assert equal_step_qp(w / 4, 30) == 42
    assert equal_step_qp(w * 0 + 1, 30) == 30  # constant: no scale, QP unchanged
    assert equal_step_qp(w * 2.0**20, 30) == 0  # clamped


def run_at(label: str, points: list[tuple[float, float]]) -> list[Run]:
    out = []
    for bpw, snr in points:
        r = Run("m", label, label, "p")
        # 1000 weights, signal 1000, noise giving ``snr``
        r.tensors.append(TensorResult("t", 1000, bpw * 1000 / 8, 1000.0, 1000.0 / 10 ** (snr / 10)))
        r.enc_cpu = 2.0
        out.append(r)
    return out


def test_at_rates_interpolates_and_compares_to_nncodec() -> None:
    runs = run_at("vvc", [(1.5, 8.0), (2.5, 14.0)]) + run_at("nncodec", [(1.8, 10.0), (2.2, 13.0)])
    rows = {r["method"]: r for r in at_rates(runs, [2.0, 3.0])}
    assert rows["vvc"]["snr@2"] == pytest.approx(11.0)
    assert rows["vvc"]["gap@2"] == pytest.approx(12.04 - 11.0)
    assert rows["nncodec"]["snr@2"] == pytest.approx(11.5)
    assert rows["vvc"]["vs_nncodec@2"] == pytest.approx(-0.5)
    assert rows["vvc"]["snr@3"] is None  # outside the measured span: not extrapolated
    assert rows["vvc"]["enc_mw_per_cpu_s"] == pytest.approx(2000 / 1e6 / 4.0)


def test_tuned_video_uses_tensor_scaling_and_equal_steps() -> None:
    rng = np.random.default_rng(0)
    weights = {"small": (rng.standard_normal((64, 128)) * 0.3).astype(np.float32),
               "large": (rng.standard_normal((64, 128)) * 1.2).astype(np.float32)}
    plain = run_video("m", weights, "vvc", 30, preset="faster", jobs=2, threads=1)
    tuned = run_video("m", weights, "vvc", 30, preset="faster", jobs=2, threads=1, tuned=True)
    assert tuned.method == "vvc-tuned" and plain.method == "vvc"
    assert tuned.params_bytes == 2 * 4 and plain.params_bytes == 2 * 64 * 4
    # equal step: both tensors get about the same absolute noise per weight
    noise = [t.noise / t.numel for t in tuned.tensors]
    assert max(noise) / min(noise) < 1.6, noise
