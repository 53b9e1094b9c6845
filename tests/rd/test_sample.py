"""RD samples from a fraction of a tensor must predict the whole tensor's encode."""

from __future__ import annotations

import numpy as np
import pytest

from llmc_format.codecs.base import ArraySpec
from llmc_format.codecs.stages import decode_encoded, encode_tensor, stage_bytes
from llmc_format.errors import CodecError
from llmc_format.metrics import error_energy
from llmc_format.rd.allocate import EXTRAPOLATE
from llmc_format.rd.sample import _extend, measure, sample_blocks


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


def blockdct_vvc(qp: int) -> list[dict]:
    return [{"id": "blockdct", "bits": 10}, {"id": "vvc", "qp": qp, "preset": "faster"}]


def test_finer_samples_reach_toward_the_exact_rate() -> None:
    """``finer_until``: a tensor whose exact rate (float32: ~27 bits/weight) lies far above
    its samples gets finer ones, down to the codec's lowest QP or the finest QP it codes
    (libvvenc refuses QPs below ~4 on dense full-range codes); a rate the samples already
    reach adds none."""
    rng = np.random.default_rng(11)
    x = (rng.standard_normal((256, 256)) * 0.02).astype(np.float32)
    base = measure("w", x, blockdct_vvc, (22, 29), fraction=1.0, finer_until=(0.5, 0))
    assert base.curve.qps == [22, 29] and base.floor_qp is None
    m = measure("w", x, blockdct_vvc, (22, 29), fraction=1.0, finer_until=(30.0, 0))
    assert min(m.curve.qps) < 22 - EXTRAPOLATE
    # extending the measured curve (``known``) keeps its samples and adds the same finer ones
    ext = measure("w", x, blockdct_vvc, (), fraction=1.0, finer_until=(30.0, 0), known=base.curve)
    assert ext.curve.qps == m.curve.qps and ext.floor_qp == m.floor_qp
    assert ext.curve.bpw == pytest.approx(m.curve.bpw, rel=1e-12)
    assert ext.curve.mse[-2:] == base.curve.mse
    finest = min(m.curve.qps)
    # either the codec coded the lowest QP, or the floor is the finest QP it coded
    assert finest == 0 if m.floor_qp is None else m.floor_qp == finest
    assert m.curve.bpw[0] > base.curve.bpw[0] + 1.0  # it reaches higher rates
    assert m.curve.mse[0] < base.curve.mse[0] / 4
    # the extra samples are real encodes: the finest one matches the full tensor's encode
    spec = ArraySpec("float32", x.shape, "w")
    enc = encode_tensor(x, spec, blockdct_vvc(finest))
    assert m.curve.bpw[0] == pytest.approx(8 * stage_bytes(enc, 1) / x.size, rel=1e-9)


def test_extension_stops_at_the_rate_and_bisects_a_codec_failure() -> None:
    """``_extend`` with a codec that fails below QP 6 (stand-in for libvvenc's refusal):
    the floor is 6 exactly, no sample lies below it; with a reachable rate it stops early."""
    calls: list[int] = []

    def run(reach: float) -> tuple[list[int], int | None]:
        qps = [22, 29, 36, 43]
        bpw, mse = [(50 - q) / 7 for q in qps], [2.0 ** (q / 6) for q in qps]

        def point(q: int) -> None:
            calls.append(q)
            if q < 6:
                raise CodecError("refused")
            bpw.append((50 - q) / 7)
            mse.append(2.0 ** (q / 6))

        floor = _extend(qps, bpw, mse, 1000, 1.0, point, reach, 0)
        assert len(qps) == len(bpw) == len(mse)
        return qps, floor

    qps, floor = run(100.0)
    assert floor == 6 and sorted(qps)[:3] == [6, 8, 15]  # 15, 8, then 0 fails
    assert calls == [15, 8, 0, 4, 6, 5]  # the bisection between 0 and 8: not every QP tried
    # a reach met 4 QPs below the sample at 15 (rate (50 - 11) / 7 = 5.6): stops at 15
    qps, floor = run(5.5)
    assert min(qps) == 15 and floor is None
