"""Round-to-nearest baseline: size accounting and plausible error."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

from llmc_format.errors import CodecError
from llmc_format.metrics import error_energy, snr_db
from tools.baselines.rtn import rtn_quantize
from tools.models import minilm_safetensors_or_missing

MINILM = minilm_safetensors_or_missing()


def test_4_bit_g128_bpw_and_snr_on_gaussian() -> None:
    x = np.random.default_rng(0).normal(size=(64, 1024)).astype(np.float32)
    r = rtn_quantize(x, bits=4, group_size=128)
    assert r.bits_per_weight == 4.25  # 4 + 32/128
    assert r.dequantized.dtype == np.float32 and r.dequantized.shape == x.shape
    # Gaussian groups of 128 span ~±2.6σ: step ≈ 5.2σ/15, SNR ≈ 10·log10(12/0.35²) ≈ 20 dB
    assert 18.0 < snr_db(*error_energy(x, r.dequantized)) < 22.0
    # every group uses at most 16 distinct values
    groups = r.dequantized.reshape(64, 8, 128)
    assert max(len(np.unique(g)) for g in groups.reshape(-1, 128)) <= 16


@pytest.mark.parametrize(("bits", "lo", "hi"), [(2, 4.5, 7.5), (3, 12.0, 15.0), (4, 18.5, 21.5)])
def test_snr_grows_about_6_db_per_bit(bits: int, lo: float, hi: float) -> None:
    x = np.random.default_rng(1).normal(size=(32, 512)).astype(np.float32)
    r = rtn_quantize(x, bits=bits)
    assert r.bits_per_weight == bits + 0.25
    assert lo < snr_db(*error_energy(x, r.dequantized)) < hi


def test_partial_last_group_is_counted_exactly() -> None:
    x = np.random.default_rng(2).normal(size=(3, 130)).astype(np.float32)
    r = rtn_quantize(x, bits=3, group_size=128)
    assert r.bits_per_weight == pytest.approx((390 * 3 + 6 * 32) / 390)


def test_reproduces_q4_1_style_blocks_exactly() -> None:
    """Data that already sits on a 4-bit grid per group of 32 comes back (nearly) unchanged."""
    rng = np.random.default_rng(3)
    codes = rng.integers(0, 16, size=(16, 256))
    codes[:, ::32] = 0
    codes[:, 1::32] = 15  # every block uses its full range
    d = np.float16(0.0123).astype(np.float32)
    m = np.float16(-0.09).astype(np.float32)
    x = (codes * d + m).astype(np.float32)
    r = rtn_quantize(x, bits=4, group_size=32)
    assert np.abs(r.dequantized - x).max() < 1e-5
    assert r.bits_per_weight == 5.0


def test_accepts_other_float_dtypes_and_shapes() -> None:
    x = np.linspace(-1, 1, 300).astype(ml_dtypes.bfloat16)
    r = rtn_quantize(x, bits=4, group_size=64)
    assert r.dequantized.shape == (300,)
    assert snr_db(*error_energy(x.astype(np.float32), r.dequantized)) > 20.0
    assert rtn_quantize(np.array(2.0, np.float16)).dequantized == np.float32(2.0)


@pytest.mark.parametrize("kwargs", [{"bits": 0}, {"bits": 9}, {"bits": 4.0}, {"group_size": 0}])
def test_bad_arguments(kwargs: dict) -> None:
    with pytest.raises(CodecError):
        rtn_quantize(np.ones((2, 4), np.float32), **kwargs)


def test_non_finite_and_integer_inputs_refused() -> None:
    with pytest.raises(CodecError, match="'w'"):
        rtn_quantize(np.array([1.0, np.nan], np.float32), name="w")
    with pytest.raises(CodecError, match="float"):
        rtn_quantize(np.arange(4), name="w")


@pytest.mark.skipif(not MINILM.exists(), reason="MiniLM-L6 weights not installed")
def test_minilm_weight_4_bit_g128() -> None:
    from safetensors import safe_open

    with safe_open(str(MINILM), framework="numpy") as f:
        w = f.get_tensor("encoder.layer.0.attention.self.query.weight")
    r = rtn_quantize(w, bits=4, group_size=128)
    assert r.bits_per_weight == 4.25
    assert 17.0 < snr_db(*error_energy(w, r.dequantized)) < 24.0
