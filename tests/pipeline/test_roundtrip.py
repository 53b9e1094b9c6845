"""Pack -> unpack / load round trips through the public API, lossless."""

from __future__ import annotations

from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import llmc_format
from llmc_format import dtypes
from llmc_format.errors import TensorNotFoundError

# every dtype, as raw bits: any bit pattern (NaN payloads, -0.0, denormals) must survive
_NAMES = dtypes.all_names()


@st.composite
def tensors(draw: st.DrawFn) -> dict[str, np.ndarray]:
    names = draw(st.lists(
        st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=40),
        min_size=1, max_size=4, unique=True))
    out = {}
    for name in names:
        dt = dtypes.to_numpy(draw(st.sampled_from(_NAMES)))
        shape = draw(hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=7))
        raw = draw(hnp.arrays(np.uint8, (int(np.prod(shape)) * dt.itemsize,)))
        arr = raw.view(dt).reshape(shape) if dt != np.bool_ else (raw % 2).astype(bool).reshape(shape)
        out[name] = arr
    return out


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


@settings(max_examples=40, deadline=None)
@given(data=tensors())
def test_save_load_bit_exact(tmp_path_factory: pytest.TempPathFactory, data: dict[str, np.ndarray]) -> None:
    path = tmp_path_factory.mktemp("rt") / "x.llmc"
    llmc_format.save_file(data, path, metadata={"note": "hypothesis", "n": 3})
    back = llmc_format.load_file(path)
    assert list(back) == list(data)
    for k, v in data.items():
        assert same_bits(v, back[k]), k
    with llmc_format.safe_open(path) as f:
        assert f.metadata()["user"] == {"note": "hypothesis", "n": 3}
    assert llmc_format.verify(path).ok


def test_get_slice_reads_rows(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((300, 70)).astype(ml_dtypes.bfloat16)
    path = tmp_path / "s.llmc"
    llmc_format.save_file({"w": w}, path)
    with llmc_format.safe_open(path) as f:
        sl = f.get_slice("w")
        assert sl.get_shape() == [300, 70]
        assert sl.get_dtype() == "bfloat16"
        for idx in (slice(10, 20), slice(None), slice(-5, None), slice(290, 400), slice(50, 10),
                    slice(1, 100, 7), slice(None, None, -3), 0, -1, 123):
            assert same_bits(np.ascontiguousarray(w[idx]), sl[idx]), idx
        assert same_bits(np.ascontiguousarray(w[5:9, 3:8]), sl[5:9, 3:8])
        with pytest.raises(IndexError):
            sl[300]
        with pytest.raises(TensorNotFoundError):
            f.get_tensor("nope")


def test_framework_pt(tmp_path: Path) -> None:
    import torch

    t = torch.randn(4, 6, dtype=torch.bfloat16)
    path = tmp_path / "t.llmc"
    llmc_format.save_file({"t": t}, path)
    with llmc_format.safe_open(path, framework="pt") as f:
        back = f.get_tensor("t")
    assert back.dtype == torch.bfloat16
    assert torch.equal(back.view(torch.int16), t.view(torch.int16))
