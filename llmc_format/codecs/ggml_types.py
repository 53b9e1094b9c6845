"""ggml tensor types: block geometry and dequantization, in numpy, without the gguf package.

A GGUF tensor of a quantized type is a sequence of fixed-size *blocks* along its innermost
dimension: ``block_size`` weights in ``type_size`` bytes (e.g. Q4_1: 32 weights in 20
bytes). The layouts and formulas here are normative for llmc (spec/FORMAT.md §7.6,
block layouts); they reproduce ggml's reference dequantization (``ggml-quants.c``) and are
written so that every float32 operation happens in the same order as in the gguf
package's numpy reference (``gguf.quants``), hence bit-identical results (tested).

Types whose dequantization needs ggml's codebook grids (IQ1_S, IQ1_M, IQ2_XXS, IQ2_XS,
IQ2_S, IQ3_XXS, IQ3_S) are stored bit-exactly like any other type, but decoding them to
floats is delegated to the gguf package (its tables are ~10 KB of hex that this module
does not copy): see ``GRID_TYPES``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from llmc_format.errors import CodecError

QK_K = 256


@dataclass(frozen=True)
class GgmlType:
    """One ggml type: its stable GGUF id, geometry, decoded dtype and default streams."""

    name: str
    type_id: int
    block_size: int
    type_size: int
    #: the llmc dtype of the decoded values
    dtype: str
    #: encoder's default split of a block into streams: (bytes, element width) in block order
    fields: tuple[tuple[int, int], ...]

    @property
    def plain(self) -> bool:
        """A plain (unquantized) element type: one element per block."""
        return self.block_size == 1


def _t(name: str, type_id: int, block: int, size: int, fields: tuple[tuple[int, int], ...],
       dtype: str = "float32") -> GgmlType:
    assert sum(n for n, _ in fields) == size, name
    return GgmlType(name, type_id, block, size, dtype, fields)


_H = (2, 2)  # one float16 field
#: every type llmc stores natively, by GGUF name (names and ids are ggml's, forever)
TYPES: dict[str, GgmlType] = {t.name: t for t in (
    _t("F32", 0, 1, 4, ((4, 4),)),
    _t("F16", 1, 1, 2, ((2, 2),), "float16"),
    _t("BF16", 30, 1, 2, ((2, 2),), "bfloat16"),
    _t("F64", 28, 1, 8, ((8, 8),), "float64"),
    _t("I8", 24, 1, 1, ((1, 1),), "int8"),
    _t("I16", 25, 1, 2, ((2, 2),), "int16"),
    _t("I32", 26, 1, 4, ((4, 4),), "int32"),
    _t("I64", 27, 1, 8, ((8, 8),), "int64"),
    _t("Q4_0", 2, 32, 18, (_H, (16, 1))),
    _t("Q4_1", 3, 32, 20, (_H, _H, (16, 1))),
    _t("Q5_0", 6, 32, 22, (_H, (4, 1), (16, 1))),
    _t("Q5_1", 7, 32, 24, (_H, _H, (4, 1), (16, 1))),
    _t("Q8_0", 8, 32, 34, (_H, (32, 1))),
    _t("Q2_K", 10, QK_K, 84, ((16, 1), (64, 1), _H, _H)),
    _t("Q3_K", 11, QK_K, 110, ((32, 1), (64, 1), (12, 1), _H)),
    _t("Q4_K", 12, QK_K, 144, (_H, _H, (12, 1), (128, 1))),
    _t("Q5_K", 13, QK_K, 176, (_H, _H, (12, 1), (32, 1), (128, 1))),
    _t("Q6_K", 14, QK_K, 210, ((128, 1), (64, 1), (16, 1), _H)),
    _t("Q8_K", 15, QK_K, 292, ((4, 4), (256, 1), (32, 2))),
    _t("IQ2_XXS", 16, QK_K, 66, (_H, (64, 1))),
    _t("IQ2_XS", 17, QK_K, 74, (_H, (64, 1), (8, 1))),
    _t("IQ3_XXS", 18, QK_K, 98, (_H, (96, 1))),
    _t("IQ1_S", 19, QK_K, 50, (_H, (32, 1), (16, 2))),
    _t("IQ4_NL", 20, 32, 18, (_H, (16, 1))),
    _t("IQ3_S", 21, QK_K, 110, (_H, (64, 1), (8, 1), (32, 1), (4, 1))),
    _t("IQ2_S", 22, QK_K, 82, (_H, (64, 1), (8, 1), (8, 1))),
    _t("IQ4_XS", 23, QK_K, 136, (_H, (2, 2), (4, 1), (128, 1))),
    _t("IQ1_M", 29, QK_K, 56, ((32, 1), (16, 1), (8, 1))),
    _t("TQ1_0", 34, QK_K, 54, ((48, 1), (4, 1), _H)),
    _t("TQ2_0", 35, QK_K, 66, ((64, 1), _H)),
    _t("MXFP4", 39, 32, 17, ((1, 1), (16, 1))),
    _t("NVFP4", 40, 64, 36, ((4, 1), (32, 1))),
)}
#: types decoded to floats by the gguf package (codebook grids not reimplemented here)
GRID_TYPES = frozenset({"IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS", "IQ3_S"})


def ggml_type(name: object, where: str = "") -> GgmlType:
    """The type named ``name``; ``CodecError`` if llmc does not know it."""
    t = TYPES.get(name) if isinstance(name, str) else None
    if t is None:
        raise CodecError(f"{where}: unknown ggml type {name!r}")
    return t


# ---------------------------------------------------------------------------------------
# Dequantization: blocks (n_blocks, type_size) uint8 -> (n_blocks, block_size) float32


def _f16(b: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(b).view("<f2").astype(np.float32)


def _nibbles(qs: np.ndarray, n: int) -> np.ndarray:
    """Low nibbles of ``n`` bytes then their high nibbles: element j < n in the low
    nibble of byte j, element n + j in its high nibble (ggml's order)."""
    q = qs.reshape((qs.shape[0], 1, n)) >> np.array([0, 4], np.uint8).reshape((1, 2, 1))
    return (q & np.uint8(0x0F)).reshape((qs.shape[0], 2 * n))


def _q4_0(b: np.ndarray) -> np.ndarray:
    d = _f16(b[:, 0:2])
    q = _nibbles(b[:, 2:18], 16).astype(np.int8) - np.int8(8)
    return d * q.astype(np.float32)


def _q4_1(b: np.ndarray) -> np.ndarray:
    d, m = _f16(b[:, 0:2]), _f16(b[:, 2:4])
    return (d * _nibbles(b[:, 4:20], 16).astype(np.float32)) + m


def _high_bits32(qh: np.ndarray) -> np.ndarray:
    """Bit j of the little-endian u32 ``qh`` as the fifth bit of element j."""
    h = np.ascontiguousarray(qh).view("<u4").reshape((-1, 1))
    h = h >> np.arange(32, dtype=np.uint32).reshape((1, 32))
    return (h & np.uint32(1)).astype(np.uint8)


def _q5_0(b: np.ndarray) -> np.ndarray:
    d = _f16(b[:, 0:2])
    q = (_nibbles(b[:, 6:22], 16) | (_high_bits32(b[:, 2:6]) << np.uint8(4))).astype(np.int8)
    return d * (q - np.int8(16)).astype(np.float32)


def _q5_1(b: np.ndarray) -> np.ndarray:
    d, m = _f16(b[:, 0:2]), _f16(b[:, 2:4])
    q = _nibbles(b[:, 8:24], 16) | (_high_bits32(b[:, 4:8]) << np.uint8(4))
    return (d * q.astype(np.float32)) + m


def _q8_0(b: np.ndarray) -> np.ndarray:
    d = _f16(b[:, 0:2])
    return np.ascontiguousarray(b[:, 2:34]).view(np.int8).astype(np.float32) * d


def _q2_k(b: np.ndarray) -> np.ndarray:
    n = b.shape[0]
    scales, qs = b[:, 0:16], b[:, 16:80]
    d, dmin = _f16(b[:, 80:82]), _f16(b[:, 82:84])
    dl = (d * (scales & 0xF).astype(np.float32)).reshape((n, 16, 1))
    ml = (dmin * (scales >> 4).astype(np.float32)).reshape((n, 16, 1))
    shift = np.array([0, 2, 4, 6], np.uint8).reshape((1, 1, 4, 1))
    q = ((qs.reshape((n, 2, 1, 32)) >> shift) & np.uint8(3)).reshape((n, 16, 16))
    return (dl * q.astype(np.float32) - ml).reshape((n, QK_K))


def _q3_k(b: np.ndarray) -> np.ndarray:
    n = b.shape[0]
    hmask, qs, sc, d = b[:, 0:32], b[:, 32:96], b[:, 96:108], _f16(b[:, 108:110])
    low = (sc[:, 0:8].reshape((n, 1, 8)) >> np.array([0, 4], np.uint8).reshape((1, 2, 1)))
    high = (sc[:, 8:12].reshape((n, 1, 4)) >> np.array([0, 2, 4, 6], np.uint8).reshape((1, 4, 1)))
    s = (low.reshape((n, 16)) & np.uint8(0x0F)) | ((high.reshape((n, 16)) & np.uint8(3)) << np.uint8(4))
    dl = (d * (s.astype(np.int8) - np.int8(32)).astype(np.float32)).reshape((n, 16, 1))
    ql = qs.reshape((n, 2, 1, 32)) >> np.array([0, 2, 4, 6], np.uint8).reshape((1, 1, 4, 1))
    qh = hmask.reshape((n, 1, 1, 32)) >> np.arange(8, dtype=np.uint8).reshape((1, 1, 8, 1))
    ql = ql.reshape((n, 16, 16)) & np.uint8(3)
    qh = (qh.reshape((n, 16, 16)) & np.uint8(1)) ^ np.uint8(1)  # bit set: no offset
    q = (ql.astype(np.int8) - (qh << np.uint8(2)).astype(np.int8)).astype(np.float32)
    return (dl * q).reshape((n, QK_K))


def _k_scale_min(sc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The eight 6-bit scales and mins packed in Q4_K/Q5_K's 12 scale bytes."""
    n = sc.shape[0]
    s = sc.reshape((n, 3, 4))
    d, m, md = s[:, 0:1], s[:, 1:2], s[:, 2:3]
    scale = np.concatenate([d & 0x3F, (md & 0x0F) | ((d >> 2) & 0x30)], axis=-1)
    mins = np.concatenate([m & 0x3F, (md >> 4) | ((m >> 2) & 0x30)], axis=-1)
    return scale.reshape((n, 8)), mins.reshape((n, 8))


def _k_scales(b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Q4_K/Q5_K's per-sub-block scale d·sc and offset dmin·m, shaped (n, 8, 1)."""
    n = b.shape[0]
    d, dmin = _f16(b[:, 0:2]), _f16(b[:, 2:4])
    sc, m = _k_scale_min(b[:, 4:16])
    dl = (d * sc.astype(np.float32)).reshape((n, 8, 1))
    return dl, (dmin * m.astype(np.float32)).reshape((n, 8, 1))


def _q4_k(b: np.ndarray) -> np.ndarray:
    n = b.shape[0]
    dl, ml = _k_scales(b)
    q = b[:, 16:144].reshape((n, 4, 1, 32)) >> np.array([0, 4], np.uint8).reshape((1, 1, 2, 1))
    q = (q & np.uint8(0x0F)).reshape((n, 8, 32)).astype(np.float32)
    return (dl * q - ml).reshape((n, QK_K))


def _q5_k(b: np.ndarray) -> np.ndarray:
    n = b.shape[0]
    dl, ml = _k_scales(b)
    ql = b[:, 48:176].reshape((n, 4, 1, 32)) >> np.array([0, 4], np.uint8).reshape((1, 1, 2, 1))
    qh = b[:, 16:48].reshape((n, 1, 1, 32)) >> np.arange(8, dtype=np.uint8).reshape((1, 1, 8, 1))
    ql = (ql & np.uint8(0x0F)).reshape((n, 8, 32))
    qh = (qh & np.uint8(1)).reshape((n, 8, 32))
    q = (ql | (qh << np.uint8(4))).astype(np.float32)
    return (dl * q - ml).reshape((n, QK_K))


def _q6_k(b: np.ndarray) -> np.ndarray:
    n = b.shape[0]
    ql, qh = b[:, 0:128], b[:, 128:192]
    scales = np.ascontiguousarray(b[:, 192:208]).view(np.int8).astype(np.float32)
    d = (_f16(b[:, 208:210]) * scales).reshape((n, 16, 1))
    ql = ql.reshape((n, 2, 1, 64)) >> np.array([0, 4], np.uint8).reshape((1, 1, 2, 1))
    ql = (ql & np.uint8(0x0F)).reshape((n, 8, 32))
    qh = qh.reshape((n, 2, 1, 32)) >> np.array([0, 2, 4, 6], np.uint8).reshape((1, 1, 4, 1))
    qh = (qh & np.uint8(3)).reshape((n, 8, 32))
    q = ((ql | (qh << np.uint8(4))).astype(np.int8) - np.int8(32)).reshape((n, 16, 16))
    return (d * q.astype(np.float32)).reshape((n, QK_K))


def _q8_k(b: np.ndarray) -> np.ndarray:
    d = np.ascontiguousarray(b[:, 0:4]).view("<f4")
    return np.ascontiguousarray(b[:, 4:260]).view(np.int8).astype(np.float32) * d


_TRITS = np.array([1, 3, 9, 27, 81], np.uint8)


def _tq1_0(b: np.ndarray) -> np.ndarray:
    n = b.shape[0]
    qs, qh, d = b[:, 0:48], b[:, 48:52], _f16(b[:, 52:54])
    q0 = (qs[:, :32].reshape((n, 1, 1, 32)) * _TRITS.reshape((1, 1, 5, 1))).reshape((n, -1))
    q1 = (qs[:, 32:].reshape((n, 1, 1, 16)) * _TRITS.reshape((1, 1, 5, 1))).reshape((n, -1))
    q2 = (qh.reshape((n, 1, 1, 4)) * _TRITS[:4].reshape((1, 1, 4, 1))).reshape((n, -1))
    q = np.concatenate([q0, q1, q2], axis=-1)
    q = ((q.astype(np.uint16) * 3) >> 8).astype(np.int8) - np.int8(1)
    return d * q.astype(np.float32)


def _tq2_0(b: np.ndarray) -> np.ndarray:
    n = b.shape[0]
    d = _f16(b[:, 64:66])
    q = b[:, 0:64].reshape((n, 2, 1, 32)) >> np.array([0, 2, 4, 6], np.uint8).reshape((1, 1, 4, 1))
    q = (q & 0x03).reshape((n, -1)).astype(np.int8) - np.int8(1)
    return d * q.astype(np.float32)


_E2M1 = np.array([0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12], np.int8)
_IQ4 = np.array([-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113],
                np.int8)


def _mxfp4(b: np.ndarray) -> np.ndarray:
    n = b.shape[0]
    e = b[:, 0:1]
    d = np.where(e < 2, np.uint32(0x00200000) << np.uint32(e), np.uint32(e - 1) << np.uint32(23))
    d = d.astype(np.uint32).view(np.float32)
    q = _nibbles(b[:, 1:17], 16).reshape((n, 32))
    return d * _E2M1[q].astype(np.float32)


def _ue4m3_half(x: np.ndarray) -> np.ndarray:
    """Unsigned E4M3 (bias 7) scale, halved (NVFP4 pairs it with doubled E2M1 values)."""
    exp = (x >> 3).astype(np.int32) & 0xF
    man = (x & 0x7).astype(np.float32)
    raw = np.where(exp == 0, man * 2**-9,
                   (1.0 + man / 8.0) * (2.0 ** (exp.astype(np.float32) - 7)))
    return np.where((x == 0) | (x == 0x7F), 0.0, raw * 0.5)


def _nvfp4(b: np.ndarray) -> np.ndarray:
    n = b.shape[0]
    d = _ue4m3_half(b[:, 0:4]).reshape((n, 4, 1))
    qs = b[:, 4:36].reshape((n, 4, 8))
    q = np.concatenate([qs & np.uint8(0x0F), qs >> np.uint8(4)], axis=-1)
    return (d * _E2M1[q].astype(np.float32)).reshape((n, 64)).astype(np.float32)


def _iq4_nl(b: np.ndarray) -> np.ndarray:
    d = _f16(b[:, 0:2])
    return d * _IQ4[_nibbles(b[:, 2:18], 16)].astype(np.float32)


def _iq4_xs(b: np.ndarray) -> np.ndarray:
    n = b.shape[0]
    d = _f16(b[:, 0:2])
    sh = np.ascontiguousarray(b[:, 2:4]).view("<u2").reshape((n, 1))
    sh = (sh >> np.arange(0, 16, 2, dtype=np.uint16).reshape((1, 8))).astype(np.uint8) & np.uint8(3)
    sl = b[:, 4:8].reshape((n, 4, 1)) >> np.array([0, 4], np.uint8).reshape((1, 1, 2))
    sl = sl.reshape((n, 8)) & np.uint8(0x0F)
    s = (sl | (sh << np.uint8(4))).astype(np.int8) - np.int8(32)
    dl = (d * s.astype(np.float32)).reshape((n, 8, 1))
    q = b[:, 8:136].reshape((n, 8, 1, 16)) >> np.array([0, 4], np.uint8).reshape((1, 1, 2, 1))
    q = (q & np.uint8(0x0F)).reshape((n, 8, 32))
    return (dl * _IQ4[q].astype(np.float32)).reshape((n, QK_K))


_DEQUANT: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "Q4_0": _q4_0, "Q4_1": _q4_1, "Q5_0": _q5_0, "Q5_1": _q5_1, "Q8_0": _q8_0,
    "Q2_K": _q2_k, "Q3_K": _q3_k, "Q4_K": _q4_k, "Q5_K": _q5_k, "Q6_K": _q6_k, "Q8_K": _q8_k,
    "TQ1_0": _tq1_0, "TQ2_0": _tq2_0, "MXFP4": _mxfp4, "NVFP4": _nvfp4,
    "IQ4_NL": _iq4_nl, "IQ4_XS": _iq4_xs,
}
#: blocks dequantized per numpy call: bounds the temporaries (~10x the output) to a few MB
_GROUP_BLOCKS = 4096


def dequantize(raw: np.ndarray, t: GgmlType, shape: tuple[int, ...], where: str = "") -> np.ndarray:
    """The values of ``raw`` (the tensor's bytes, any shape of uint8) as ``t.dtype`` in ``shape``.

    Plain types are reinterpreted (bit-exact); quantized ones are dequantized to float32
    block by block.
    """
    flat = np.ascontiguousarray(raw).reshape(-1).view(np.uint8)
    numel = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if flat.size * t.block_size != numel * t.type_size:
        raise CodecError(f"{where}: {flat.size} bytes of {t.name} do not hold {list(shape)}")
    if t.plain:
        from llmc_format import dtypes

        return flat.view(dtypes.to_numpy(t.dtype)).reshape(shape)
    blocks = flat.reshape((-1, t.type_size))
    if t.name in GRID_TYPES:
        return _grid_dequantize(blocks, t, where).reshape(shape)
    fn = _DEQUANT.get(t.name)
    if fn is None:
        raise CodecError(f"{where}: no dequantizer for ggml type {t.name}")
    out = np.empty((blocks.shape[0], t.block_size), np.float32)
    with np.errstate(all="ignore"):  # inf/NaN scales are data, as in ggml
        for s in range(0, blocks.shape[0], _GROUP_BLOCKS):
            out[s:s + _GROUP_BLOCKS] = fn(blocks[s:s + _GROUP_BLOCKS])
    return out.reshape(shape)


#: elements tested per ``np.isnan`` call: bounds its boolean temporary to 1 MB
_NAN_SCAN = 1 << 20


def has_nan(values: np.ndarray) -> bool:
    """Whether a float array holds a NaN, scanned in slices (no numel-sized temporary)."""
    flat = np.ascontiguousarray(values).reshape(-1)
    if flat.dtype.kind != "f":
        return False
    return any(bool(np.isnan(flat[s:s + _NAN_SCAN]).any()) for s in range(0, flat.size, _NAN_SCAN))


def _grid_dequantize(blocks: np.ndarray, t: GgmlType, where: str) -> np.ndarray:
    if not blocks.shape[0]:  # an empty row range: gguf's dequantizers cannot reshape 0 blocks
        return np.empty((0, t.block_size), np.float32)
    try:
        import gguf
    except ImportError:
        raise CodecError(f"{where}: decoding ggml type {t.name} to floats needs the 'gguf' "
                         "package (its codebook grids are not part of llmc)") from None
    qtype = gguf.GGMLQuantizationType[t.name]
    with np.errstate(all="ignore"):
        return np.asarray(gguf.quants.dequantize(np.ascontiguousarray(blocks), qtype), np.float32)
