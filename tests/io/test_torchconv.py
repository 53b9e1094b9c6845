"""numpy <-> torch conversion keeps every bit, for every dtype llmc stores."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from llmc_format import dtypes
from llmc_format.errors import SourceError
from llmc_format.io.torchconv import dtype_name_of_torch, from_torch, to_torch, torch_dtype_of

ALL = dtypes.all_names()


def _random_bits(name: str, shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Arbitrary bit patterns (NaN payloads, -0.0, subnormals included) of a dtype."""
    dt = dtypes.to_numpy(name)
    rng = np.random.default_rng(seed)
    raw = rng.integers(0, 256, size=int(np.prod(shape)) * dt.itemsize, dtype=np.uint8)
    arr = raw.view(dt).reshape(shape)
    if name == "bool":
        return np.asarray((arr.view(np.uint8) & 1).astype(bool)).reshape(shape)
    return arr


@settings(max_examples=60, deadline=None)
@given(
    name=st.sampled_from(ALL),
    shape=st.lists(st.integers(0, 5), min_size=0, max_size=3).map(tuple),
    seed=st.integers(0, 2**32 - 1),
)
def test_round_trip_is_bit_exact(name: str, shape: tuple[int, ...], seed: int) -> None:
    arr = _random_bits(name, shape, seed)
    t = to_torch(arr)
    assert t.dtype == torch_dtype_of(name)
    assert tuple(t.shape) == shape
    back = from_torch(t)
    assert back.dtype == arr.dtype
    assert back.shape == arr.shape
    assert back.tobytes() == arr.tobytes()


def test_bfloat16_values_match_torch() -> None:
    arr = np.array([1.0, -2.5, 3.140625, np.inf], dtype=ml_dtypes.bfloat16)
    t = to_torch(arr)
    assert t.dtype == torch.bfloat16
    assert t.float().tolist() == [1.0, -2.5, 3.140625, float("inf")]
    assert from_torch(torch.tensor([0.5, -0.0], dtype=torch.bfloat16)).tobytes() == np.array(
        [0.5, -0.0], dtype=ml_dtypes.bfloat16
    ).tobytes()


def test_read_only_array_is_copied_not_shared() -> None:
    arr = np.arange(4, dtype=np.float32)
    arr.flags.writeable = False
    t = to_torch(arr)
    t[0] = 99.0
    assert arr[0] == 0.0


def test_writable_contiguous_array_is_shared() -> None:
    arr = np.arange(4, dtype=ml_dtypes.bfloat16)
    t = to_torch(arr)
    t[1] = 7.0
    assert float(arr[1]) == 7.0


def test_big_endian_and_non_contiguous_inputs() -> None:
    arr = np.arange(12, dtype=">f4").reshape(3, 4)
    t = to_torch(arr[:, ::2])
    assert t.tolist() == [[0.0, 2.0], [4.0, 6.0], [8.0, 10.0]]
    tt = torch.arange(6, dtype=torch.float32).reshape(2, 3).T
    assert from_torch(tt).tolist() == [[0.0, 3.0], [1.0, 4.0], [2.0, 5.0]]


def test_unsupported_dtypes_are_refused() -> None:
    with pytest.raises(SourceError, match="complex64"):
        from_torch(torch.zeros(2, dtype=torch.complex64))
    with pytest.raises(SourceError, match="complex"):
        to_torch(np.zeros(2, dtype=np.complex64))
    with pytest.raises(SourceError, match="where"):
        dtype_name_of_torch(torch.qint8, "where")
