"""Baseline adapters run the real third-party coders on small matrices."""

from __future__ import annotations

import numpy as np
import pytest

from llmc_format.errors import CodecError
from tools.baselines import snr_db


def _matrix(rows: int = 128, cols: int = 256, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal((rows, cols)) * 0.05).astype(np.float32)


def test_snr_db_is_weighted_over_all_matrices() -> None:
    x = [np.ones((2, 2), np.float32), np.ones((4, 4), np.float32)]
    y = [x[0] * 0.9, x[1]]  # noise only in the small matrix
    expected = 10 * np.log10(20 / (4 * 0.01))
    assert snr_db(x, y) == pytest.approx(expected, rel=1e-6)
    assert snr_db(x, x) == float("inf")


def test_nncodec_rate_and_quality_follow_qp() -> None:
    pytest.importorskip("nncodec", reason="pip install --no-deps nncodec==2.1.3")
    from tools.baselines.nncodec_adapter import compress_matrix

    w = _matrix()
    coarse = compress_matrix(w, qp=-12)
    fine = compress_matrix(w, qp=-24)
    for nbytes, rec, enc_s, dec_s in (coarse, fine):
        assert rec.shape == w.shape and rec.dtype == np.float32
        assert nbytes > 0 and enc_s > 0 and dec_s > 0
    assert fine[0] > coarse[0]
    assert snr_db([w], [fine[1]]) > snr_db([w], [coarse[1]]) + 6


def test_nncodec_rejects_1d_tensors() -> None:
    pytest.importorskip("nncodec", reason="pip install --no-deps nncodec==2.1.3")
    from tools.baselines.nncodec_adapter import compress_dict

    with pytest.raises(CodecError, match="'bias'"):
        compress_dict({"bias": np.zeros(64, np.float32)}, qp=-20)


def test_hqq_bits_buy_snr() -> None:
    pytest.importorskip("hqq", reason="pip install --no-deps hqq==0.2.8.post1 einops termcolor")
    from tools.baselines.hqq_adapter import quantize_matrix

    w = _matrix()
    results = {nbits: quantize_matrix(w, nbits) for nbits in (2, 3, 4)}
    snrs = {nbits: snr_db([w], [r[0]]) for nbits, r in results.items()}
    assert snrs[2] + 4 < snrs[3] < snrs[4] - 4
    assert [results[b][1] for b in (2, 3, 4)] == [2.5, 3.5, 4.5]
    assert results[3][2] > 3.5  # HQQ packs ten 3-bit codes per int32


def test_hqq_rejects_ungroupable_shapes() -> None:
    pytest.importorskip("hqq", reason="pip install --no-deps hqq==0.2.8.post1 einops termcolor")
    from tools.baselines.hqq_adapter import quantize_matrix

    with pytest.raises(CodecError, match="'odd'"):
        quantize_matrix(np.zeros((3, 7), np.float32), 4, name="odd")
