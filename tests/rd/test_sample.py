"""RD samples from a fraction of a tensor must predict the whole tensor's encode."""

from __future__ import annotations

import numpy as np
import pytest

from llmc_format.codecs.base import ArraySpec
from llmc_format.codecs.stages import decode_encoded, encode_tensor, stage_bytes
from llmc_format.metrics import error_energy
from llmc_format.rd.sample import measure, sample_blocks


def outlier_matrix() -> np.ndarray:
    """Gaussian rows plus one far outlier in a row no sample block contains."""
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((1024, 512)) * 0.02).astype(np.float32)
    blocks = sample_blocks(*x.shape, fraction=0.125)
    covered = {r for a, b in blocks for r in range(a, b)}
    free = next(r for r in range(x.shape[0]) if r not in covered)
    x[free, 7] = 0.6  # 30 sigma: sets the per-tensor range
    return x


@pytest.mark.parametrize("granularity", ["tensor", "row"])
def test_sample_predicts_full_encode(granularity: str) -> None:
    x = outlier_matrix()
    spec = ArraySpec("float32", x.shape, "w")

    def at(qp: int) -> list[dict]:
        return [{"id": "affine", "bits": 10, "granularity": granularity},
                {"id": "vvc", "qp": qp, "preset": "faster"}]

    m = measure("w", x, at, (16, 28), fraction=0.125)
    assert m.sample_weights < x.size // 4
    for i, qp in enumerate((16, 28)):
        enc = encode_tensor(x, spec, at(qp))
        full_mse = error_energy(x, decode_encoded(enc, spec))[1] / x.size
        full_bpw = 8 * stage_bytes(enc, 1) / x.size
        # the sample was coded on the whole tensor's codes: its MSE matches the full
        # encode's (a sample quantized on its own range would be ~10x off under "tensor")
        assert m.curve.mse[i] == pytest.approx(full_mse, rel=0.25), (qp, m.curve.mse[i], full_mse)
        assert m.curve.bpw[i] == pytest.approx(full_bpw, rel=0.25)
    assert m.params_bytes == (4 if granularity == "tensor" else 4 * x.shape[0])


def test_column_weights_give_the_activation_weighted_mse() -> None:
    """``col_weights`` u: each sample's weighted MSE is mean u_j·(x − x̂)², checked on the
    real codec against the full encode; all-ones weights give the plain MSE."""
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((256, 256)) * 0.02).astype(np.float32)
    spec = ArraySpec("float32", x.shape, "w")

    def at(qp: int) -> list[dict]:
        return [{"id": "blockdct", "bits": 10}, {"id": "vvc", "qp": qp, "preset": "faster"}]

    u = np.where(np.arange(256) < 32, 8.0, 0.2)
    u /= u.mean()
    m = measure("w", x, at, (24, 32), fraction=1.0, col_weights=u)
    ones = measure("w", x, at, (24, 32), fraction=1.0, col_weights=np.ones(256))
    for i, qp in enumerate((24, 32)):
        d = (x.astype(np.float64) - decode_encoded(encode_tensor(x, spec, at(qp)), spec)) ** 2
        assert m.curve.weighted[i] == pytest.approx(float((d * u).mean()), rel=1e-9)
        assert ones.curve.weighted[i] == pytest.approx(ones.curve.mse[i], rel=1e-9)
    assert measure("w", x, at, (24,), fraction=1.0).curve.weighted is None
    with pytest.raises(ValueError, match="column weights"):
        measure("w", x, at, (24,), col_weights=np.ones(7))
