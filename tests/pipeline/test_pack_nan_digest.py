"""The writer's digest rule for NaN values (FORMAT.md §7.6, "Non-finite results").

A quantized ``ggml`` tensor whose decoded values hold a NaN gets no ``digest.decoded``:
which NaN an operation on two NaNs returns (Q4_1 with NaN ``d`` and ``m``) is left to the
implementation — numpy itself answers differently for one block and for several
(research/ggml_two_nan.py) — so such a digest would fail a conforming reader. Everything
else keeps its digest. The blocks are gguf-py's own quantization, written to a GGUF by
``GGUFWriter`` and patched.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from llmc_format import safe_open
from llmc_format.codecs.base import ArraySpec
from llmc_format.codecs.ggml_types import TYPES, dequantize
from llmc_format.codecs.stages import decode_encoded
from llmc_format.container.reader import Reader
from llmc_format.pipeline.pack import encode_native_one, pack, tensor_digest

gguf = pytest.importorskip("gguf")

#: binary16 NaNs with distinct signs and payloads (quiet and signalling)
NAN_A, NAN_B = 0x7E2A, 0xFD55


def _f16_bytes(bits: int) -> np.ndarray:
    return np.array([bits], "<u2").view(np.uint8)


def _q4_1(rows: int = 4, cols: int = 64, seed: int = 0) -> np.ndarray:
    """gguf-py's Q4_1 quantization of random weights: uint8 (rows, row_bytes)."""
    a = np.random.default_rng(seed).standard_normal((rows, cols)).astype(np.float32)
    return np.asarray(gguf.quants.quantize(a, gguf.GGMLQuantizationType.Q4_1))


def _encode(raw: np.ndarray, type_name: str = "Q4_1", rows: int = 4, cols: int = 64):
    spec = ArraySpec(TYPES[type_name].dtype, (rows, cols), "w")
    return encode_native_one("w", raw, spec, [{"id": "ggml", "type": type_name}])


def test_finite_blocks_keep_digest_decoded() -> None:
    raw = _q4_1()
    packed = _encode(raw)
    values = dequantize(raw, TYPES["Q4_1"], (4, 64))
    assert packed.digest == {"source": tensor_digest(raw), "decoded": tensor_digest(values)}


def test_infinite_scale_without_nan_keeps_digest_decoded() -> None:
    """+inf times non-zero quants is ±inf, no NaN: the rule is about NaN only."""
    raw = _q4_1()
    raw[0, 0:2] = _f16_bytes(0x7C00)  # d = +inf in block 0
    raw[0, 4:20] |= 0x11  # no zero nibble: inf · q stays infinite, + m stays so
    packed = _encode(raw)
    values = dequantize(raw, TYPES["Q4_1"], (4, 64))
    assert np.isinf(values).any() and not np.isnan(values).any()
    assert packed.digest["decoded"] == tensor_digest(values)


@pytest.mark.parametrize("fields", [(NAN_A, None), (None, NAN_B), (NAN_A, NAN_B)],
                         ids=["d", "m", "d-and-m"])
def test_nan_values_drop_digest_decoded(fields: tuple[int | None, int | None]) -> None:
    """One NaN field (normative bits) or two (implementation-defined): any NaN in the
    values drops the digest; ``digest.source`` (the blocks) stays."""
    raw = _q4_1()
    for off, bits in zip((0, 2), fields, strict=True):
        if bits is not None:
            raw[1, off:off + 2] = _f16_bytes(bits)
    packed = _encode(raw)
    assert packed.digest == {"source": tensor_digest(raw)}
    # the stored tensor still decodes to the blocks' values: gguf-py's, NaN where they are
    got = decode_encoded(packed.encoded, packed.spec)
    with np.errstate(invalid="ignore"):  # NaN scales are data
        want = np.asarray(gguf.quants.dequantize(raw, gguf.GGMLQuantizationType.Q4_1), np.float32)
    nan = np.zeros(got.shape, bool)
    nan[1, :32] = True  # row 1's first block
    assert np.array_equal(np.isnan(got), nan)
    assert np.array_equal(got, want, equal_nan=True)


def test_plain_type_with_nan_keeps_digest_decoded() -> None:
    """F16 values are their bytes: a NaN payload is data, reproducible by any reader."""
    raw = np.arange(64, dtype=np.float16)
    raw[3] = np.array([NAN_B], np.uint16).view(np.float16)[0]
    spec = ArraySpec("float16", (64,), "n")
    packed = encode_native_one("n", raw.view(np.uint8), spec, [{"id": "ggml", "type": "F16"}])
    assert packed.digest["decoded"] == tensor_digest(raw) == packed.digest["source"]


#: verify --against dequantizes the GGUF source with gguf-py, which warns on NaN scales
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_pack_of_a_gguf_with_nan_scales(tmp_path: Path,
                                        make_tiny_gguf: Callable[..., dict[str, str]]) -> None:
    """``llmc pack`` of a GGUF (gguf-py's Q4_1) with NaN ``d`` and ``m`` in one block of
    one tensor: that tensor alone has no ``digest.decoded``, it decodes to the blocks'
    values (NaN where the block is), the GGUF still unpacks byte for byte, and ``verify
    --against`` the GGUF passes."""
    from llmc_format.pipeline.unpack import unpack
    from llmc_format.pipeline.verify import verify

    src = tmp_path / "nan.gguf"
    make_tiny_gguf(src, lin_type="Q4_1", tied=False)  # untied: verify --against, below
    reader = gguf.GGUFReader(str(src))
    victim = next(t for t in reader.tensors if t.name == "blk.0.attn_q.weight")
    data = bytearray(src.read_bytes())
    start = int(victim.data_offset)  # in the file: its first block's d, then m
    data[start:start + 2] = _f16_bytes(NAN_A).tobytes()
    data[start + 2:start + 4] = _f16_bytes(NAN_B).tobytes()
    src.write_bytes(bytes(data))
    arc = tmp_path / "nan.llmc"
    pack(src, arc)
    with Reader(arc) as r:
        ggml = {n: r.tensor(n) for n in r.keys()
                if r.tensor(n).pipeline and r.tensor(n).pipeline[-1]["id"] == "ggml"}
    no_digest = sorted(n for n, e in ggml.items() if "decoded" not in e.digest)
    assert no_digest == ["model.layers.0.self_attn.q_proj.weight"]
    assert all("decoded" in e.digest for n, e in ggml.items() if n not in no_digest)
    with safe_open(arc) as f:
        q = f.get_tensor(no_digest[0])  # no digest to check: decodes
        assert np.isnan(q).sum() == 32 and not np.isnan(f.get_tensor(
            "model.layers.0.self_attn.k_proj.weight")).any()
    out = unpack(arc, tmp_path / "out", format="gguf")
    assert (tmp_path / "out" / out.files[0]).read_bytes() == bytes(data)
    report = verify(arc, against=src)
    assert report.ok, [(t.name, t.problem) for t in report.tensors if not t.ok]
