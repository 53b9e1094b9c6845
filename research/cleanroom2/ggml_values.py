"""Values of ggml's quantized block types, from spec/FORMAT.md section 7.6 only.

Every function takes blocks as uint8 array (nblocks, ts) and returns float32
(nblocks, bs). All arithmetic in numpy float32 (one rounding per operation,
elementwise ufuncs are never fused).
"""
import os
import numpy as np

f32 = np.float32
_HERE = os.path.dirname(os.path.abspath(__file__))


def _f16(blk, off):
    return blk[:, off:off + 2].copy().view("<f2").astype(np.float32)[:, 0]


def _f32(blk, off):
    return blk[:, off:off + 4].copy().view("<f4")[:, 0].astype(np.float32)


def _u16(blk, off):
    return blk[:, off:off + 2].copy().view("<u2")[:, 0].astype(np.int64)


def _u32(blk, off):
    return blk[:, off:off + 4].copy().view("<u4")[:, 0].astype(np.int64)


def _lo(x):
    return x & 15


def _hi(x):
    return x >> 4


def nib32(qs):
    """qs (nb,16) -> (nb,32): element e<16 lo(qs[e]), 16+e hi(qs[e])."""
    q = qs.astype(np.int64)
    return np.concatenate([q & 15, q >> 4], axis=1)


def _fl(x):
    return np.asarray(x, dtype=np.float32)


E_FP4 = np.array([0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12], dtype=np.float32)
K_NL = np.array([-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113],
                dtype=np.float32)


def _grids():
    path = os.path.join(_HERE, "..", "..", "spec", "ggml-grids.txt")
    tabs = {}
    cur = None
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("table "):
                _, name, ent, el = line.split()
                cur = (name, int(ent), int(el))
                tabs[name] = (cur, [])
                continue
            tabs[cur[0]][1].append(int(line, 16))
    out = {}
    for name, ((_, ent, el), vals) in tabs.items():
        assert len(vals) == ent, name
        a = np.array([[(v >> (8 * j)) & 0xFF for j in range(el)] for v in vals], dtype=np.uint8)
        if name == "iq1s_grid":
            a = a.view(np.int8)
        out[name] = a
    return out


_G = None


def grids():
    global _G
    if _G is None:
        _G = _grids()
    return _G


GRID_XXH3 = {"iq2xxs_grid": 0x3de7d625dc4b1f07, "iq2xs_grid": 0x79a31619c2aa4027,
             "iq2s_grid": 0xc5212534caf3b5bf, "iq3xxs_grid": 0xcb32234e3a15f5a7,
             "iq3s_grid": 0xcd5ca92a3ff62aa6, "iq1s_grid": 0x273c860b28bbb277}


def check_grids():
    import xxhash
    g = grids()
    return {k: xxhash.xxh3_64_intdigest(g[k].tobytes()) == v for k, v in GRID_XXH3.items()}


def _ks(x):
    x = np.asarray(x, dtype=np.int64)
    pc = np.zeros_like(x)
    for b in range(7):
        pc += (x >> b) & 1
    return x + 128 * (pc % 2)


def _sgn(v, t):
    return np.where(((v >> t) & 1) == 1, f32(-1.0), f32(1.0)).astype(np.float32)


def q4_0(b):
    d = _f16(b, 0)[:, None]
    return d * (nib32(b[:, 2:18]) - 8).astype(np.float32)


def q4_1(b):
    d = _f16(b, 0)[:, None]
    m = _f16(b, 2)[:, None]
    return d * nib32(b[:, 4:20]).astype(np.float32) + m


def _q5(b, qh_off, qs_off):
    qh = _u32(b, qh_off)[:, None]
    e = np.arange(32)[None, :]
    return nib32(b[:, qs_off:qs_off + 16]) | (((qh >> e) & 1) << 4)


def q5_0(b):
    d = _f16(b, 0)[:, None]
    return d * (_q5(b, 2, 6) - 16).astype(np.float32)


def q5_1(b):
    d = _f16(b, 0)[:, None]
    m = _f16(b, 2)[:, None]
    return d * _q5(b, 4, 8).astype(np.float32) + m


def q8_0(b):
    d = _f16(b, 0)[:, None]
    return b[:, 2:34].view(np.int8).astype(np.float32) * d


def q8_k(b):
    d = _f32(b, 0)[:, None]
    return b[:, 4:260].view(np.int8).astype(np.float32) * d


def _hkl(nk):
    """element e = 128h + 32k + l (h<2, k<nk, l<32) index arrays."""
    e = np.arange(256)
    h = e // 128
    k = (e % 128) // 32
    l = e % 32
    return e, h, k, l


def q2_k(b):
    e, h, k, l = _hkl(4)
    sc = b[:, 0:16].astype(np.int64)
    qs = b[:, 16:80].astype(np.int64)
    d = _f16(b, 80)[:, None]
    dmin = _f16(b, 82)[:, None]
    q = (qs[:, 32 * h + l] >> (2 * k)) & 3
    s = e // 16
    dl = d * _lo(sc[:, s]).astype(np.float32)
    ml = dmin * _hi(sc[:, s]).astype(np.float32)
    return dl * q.astype(np.float32) - ml


def q3_k(b):
    e, h, k, l = _hkl(4)
    hm = b[:, 0:32].astype(np.int64)
    qs = b[:, 32:96].astype(np.int64)
    scales = b[:, 96:108].astype(np.int64)
    d = _f16(b, 108)[:, None]
    low = (qs[:, 32 * h + l] >> (2 * k)) & 3
    high = (hm[:, l] >> (4 * h + k)) & 1
    q = low - 4 * (1 - high)
    s = e // 16
    sc = np.empty((b.shape[0], 16), dtype=np.int64)
    for si in range(16):
        base = _lo(scales[:, si]) if si < 8 else _hi(scales[:, si - 8])
        sc[:, si] = base | (((scales[:, 8 + si % 4] >> (2 * (si // 4))) & 3) << 4)
    dl = d * (sc[:, s] - 32).astype(np.float32)
    return dl * q.astype(np.float32)


def _k_scales(scales):
    sc = np.empty((scales.shape[0], 8), dtype=np.int64)
    m = np.empty((scales.shape[0], 8), dtype=np.int64)
    for s in range(8):
        if s < 4:
            sc[:, s] = scales[:, s] & 63
            m[:, s] = scales[:, s + 4] & 63
        else:
            sc[:, s] = _lo(scales[:, s + 4]) | ((scales[:, s - 4] >> 6) << 4)
            m[:, s] = _hi(scales[:, s + 4]) | ((scales[:, s] >> 6) << 4)
    return sc, m


def _q45k(b, q5):
    d = _f16(b, 0)[:, None]
    dmin = _f16(b, 2)[:, None]
    scales = b[:, 4:16].astype(np.int64)
    sc, mm = _k_scales(scales)
    e = np.arange(256)
    h = e // 64
    k = (e % 64) // 32
    l = e % 32
    s = 2 * h + k
    if q5:
        qh = b[:, 16:48].astype(np.int64)
        qs = b[:, 48:176].astype(np.int64)
    else:
        qs = b[:, 16:144].astype(np.int64)
    x = qs[:, 32 * h + l]
    q = np.where(k == 0, x & 15, x >> 4)
    if q5:
        q = q + (((qh[:, l] >> s) & 1) << 4)
    dl = d * sc[:, s].astype(np.float32)
    ml = dmin * mm[:, s].astype(np.float32)
    return dl * q.astype(np.float32) - ml


def q4_k(b):
    return _q45k(b, False)


def q5_k(b):
    return _q45k(b, True)


def q6_k(b):
    e, h, k, l = _hkl(4)
    ql = b[:, 0:128].astype(np.int64)
    qh = b[:, 128:192].astype(np.int64)
    sc = b[:, 192:208].view(np.int8).astype(np.int64)
    d = _f16(b, 208)[:, None]
    x = ql[:, 64 * h + 32 * (k % 2) + l]
    low = np.where(k < 2, x & 15, x >> 4)
    high = (qh[:, 32 * h + l] >> (2 * k)) & 3
    q = (low | (high << 4)) - 32
    s = e // 16
    dl = d * sc[:, s].astype(np.float32)
    return dl * q.astype(np.float32)


def iq4_nl(b):
    d = _f16(b, 0)[:, None]
    return d * K_NL[nib32(b[:, 2:18])]


def iq4_xs(b):
    d = _f16(b, 0)[:, None]
    sh = _u16(b, 2)
    sl = b[:, 4:8].astype(np.int64)
    qs = b[:, 8:136].astype(np.int64)
    e = np.arange(256)
    s = e // 32
    t = e % 32
    ls = np.empty((b.shape[0], 8), dtype=np.int64)
    for si in range(8):
        ls[:, si] = ((sl[:, si // 2] >> (4 * (si % 2))) & 15) | (((sh >> (2 * si)) & 3) << 4)
    nib = np.where(t < 16, qs[:, 16 * s + np.where(t < 16, t, 0)] & 15,
                   qs[:, 16 * s + np.where(t >= 16, t - 16, 0)] >> 4)
    dl = d * (ls[:, s] - 32).astype(np.float32)
    return dl * K_NL[nib]


def tq1_0(b):
    qs = b[:, 0:48].astype(np.int64)
    qh = b[:, 48:52].astype(np.int64)
    d = _f16(b, 52)[:, None]
    nb = b.shape[0]
    x = np.zeros((nb, 256), dtype=np.int64)
    mul = np.zeros(256, dtype=np.int64)
    for i in range(5):
        for j in range(32):
            x[:, 32 * i + j] = qs[:, j]
            mul[32 * i + j] = 3 ** i
        for j in range(16):
            x[:, 160 + 16 * i + j] = qs[:, 32 + j]
            mul[160 + 16 * i + j] = 3 ** i
    for i in range(4):
        for j in range(4):
            x[:, 240 + 4 * i + j] = qh[:, j]
            mul[240 + 4 * i + j] = 3 ** i
    digit = (((x * mul[None, :]) % 256) * 3) >> 8
    return d * (digit - 1).astype(np.float32)


def tq2_0(b):
    e, h, k, l = _hkl(4)
    qs = b[:, 0:64].astype(np.int64)
    d = _f16(b, 64)[:, None]
    return d * (((qs[:, 32 * h + l] >> (2 * k)) & 3) - 1).astype(np.float32)


def mxfp4(b):
    e = b[:, 0].astype(np.int64)
    bits = np.where(e < 2, 0x00200000 << np.minimum(e, 1), (e - 1) << 23).astype(np.uint32)
    scale = bits.view(np.float32)[:, None]
    return scale * E_FP4[nib32(b[:, 1:17])]


def _ue4m3(s):
    s = s.astype(np.int64)
    ex = (s >> 3) & 15
    man = s & 7
    v = np.where(ex == 0, man.astype(np.float64) * 2.0 ** -9,
                 (1 + man / 8.0) * np.exp2((ex - 7).astype(np.float64))) * 0.5
    v = np.where((s == 0) | (s == 0x7F), 0.0, v)
    return v.astype(np.float32)  # exact: few mantissa bits


def nvfp4(b):
    sc = _ue4m3(b[:, 0:4])
    qs = b[:, 4:36].astype(np.int64)
    e = np.arange(64)
    g = e // 16
    t = e % 16
    idx = 8 * g + np.where(t < 8, t, t - 8)
    nib = np.where(t < 8, qs[:, idx] & 15, qs[:, idx] >> 4)
    return sc[:, g] * E_FP4[nib]


def _egrp():
    e = np.arange(256)
    gr = e // 32
    l = (e % 32) // 8
    t = e % 8
    return e, gr, l, t


def _ags(a, g, sgn):
    return (a * g.astype(np.float32)) * sgn


def iq2_xxs(b):
    G = grids()["iq2xxs_grid"]
    e, gr, l, t = _egrp()
    d = _f16(b, 0)[:, None]
    qs = b[:, 2:66].astype(np.int64)
    w = np.stack([_u32(b, 2 + 8 * g + 4) for g in range(8)], axis=1)  # (nb, 8)
    ww = w[:, gr]
    db = (d * (f32(0.5) + (ww >> 28).astype(np.float32))) * f32(0.25)
    idx = qs[:, 8 * gr + l]
    sg = _sgn(_ks((ww >> (7 * l)) & 127), t)
    return _ags(db, G[idx, t], sg)


def iq2_xs(b):
    G = grids()["iq2xs_grid"]
    e, gr, l, t = _egrp()
    d = _f16(b, 0)[:, None]
    v = np.stack([_u16(b, 2 + 2 * m) for m in range(32)], axis=1)[:, 4 * gr + l]
    sc = b[:, 66:74].astype(np.int64)[:, gr]
    s = np.where(l < 2, sc & 15, sc >> 4)
    db = (d * (f32(0.5) + s.astype(np.float32))) * f32(0.25)
    sg = _sgn(_ks(v >> 9), t)
    return _ags(db, G[v & 511, t], sg)


def iq2_s(b):
    G = grids()["iq2s_grid"]
    e, gr, l, t = _egrp()
    d = _f16(b, 0)[:, None]
    qs = b[:, 2:34].astype(np.int64)
    signs = b[:, 34:66].astype(np.int64)
    qh = b[:, 66:74].astype(np.int64)
    sc = b[:, 74:82].astype(np.int64)[:, gr]
    m = 4 * gr + l
    idx = qs[:, m] | (((qh[:, gr] >> (2 * l)) & 3) << 8)
    s = np.where(l < 2, sc & 15, sc >> 4)
    db = (d * (f32(0.5) + s.astype(np.float32))) * f32(0.25)
    sg = _sgn(signs[:, m], t)
    return _ags(db, G[idx, t], sg)


def iq3_xxs(b):
    G = grids()["iq3xxs_grid"]
    e, gr, l, t = _egrp()
    d = _f16(b, 0)[:, None]
    qs = b[:, 2:66].astype(np.int64)
    w = np.stack([_u32(b, 66 + 4 * g) for g in range(8)], axis=1)[:, gr]
    db = (d * (f32(0.5) + (w >> 28).astype(np.float32))) * f32(0.5)
    idx = qs[:, 8 * gr + 2 * l + t // 4]
    sg = _sgn(_ks((w >> (7 * l)) & 127), t)
    return _ags(db, G[idx, t % 4], sg)


def iq3_s(b):
    G = grids()["iq3s_grid"]
    e, gr, l, t = _egrp()
    d = _f16(b, 0)[:, None]
    qs = b[:, 2:66].astype(np.int64)
    qh = b[:, 66:74].astype(np.int64)
    signs = b[:, 74:106].astype(np.int64)
    scales = b[:, 106:110].astype(np.int64)
    m = e // 4
    idx = qs[:, m] | (((qh[:, m // 8] >> (m % 8)) & 1) << 8)
    sc = scales[:, gr // 2]
    s = np.where(gr % 2 == 0, sc & 15, sc >> 4)
    db = d * (1 + 2 * s).astype(np.float32)
    sg = _sgn(signs[:, e // 8], e % 8)
    return _ags(db, G[idx, e % 4], sg)


def iq1_s(b):
    G = grids()["iq1s_grid"]
    e, gr, l, t = _egrp()
    d = _f16(b, 0)[:, None]
    qs = b[:, 2:34].astype(np.int64)
    h = np.stack([_u16(b, 34 + 2 * g) for g in range(8)], axis=1)[:, gr]
    dl = d * (2 * ((h >> 12) & 7) + 1).astype(np.float32)
    delta = np.where(((h >> 15) & 1) == 1, f32(-0.125), f32(0.125)).astype(np.float32)
    idx = qs[:, 4 * gr + l] | (((h >> (3 * l)) & 7) << 8)
    return dl * (G[idx, t].astype(np.float32) + delta)


def iq1_m(b):
    G = grids()["iq1s_grid"]
    e, gr, l, t = _egrp()
    qs = b[:, 0:32].astype(np.int64)
    qh = b[:, 32:48].astype(np.int64)
    sc = np.stack([_u16(b, 48 + 2 * i) for i in range(4)], axis=1)
    dbits = (sc[:, 0] >> 12) | ((sc[:, 1] >> 8) & 0xF0) | ((sc[:, 2] >> 4) & 0xF00) | (sc[:, 3] & 0xF000)
    d = dbits.astype(np.uint16).view("<f2").astype(np.float32)[:, None]
    s = (sc[:, gr // 2] >> (6 * (gr % 2) + 3 * (l // 2))) & 7
    dl = d * (2 * s + 1).astype(np.float32)
    m = 4 * gr + l
    n = (qh[:, m // 2] >> (4 * (m % 2))) & 15
    idx = qs[:, m] | ((n & 7) << 8)
    delta = np.where((n & 8) != 0, f32(-0.125), f32(0.125)).astype(np.float32)
    return dl * (G[idx, t].astype(np.float32) + delta)


DEQ = {
    "Q4_0": q4_0, "Q4_1": q4_1, "Q5_0": q5_0, "Q5_1": q5_1, "Q8_0": q8_0, "Q8_K": q8_k,
    "Q2_K": q2_k, "Q3_K": q3_k, "Q4_K": q4_k, "Q5_K": q5_k, "Q6_K": q6_k,
    "IQ4_NL": iq4_nl, "IQ4_XS": iq4_xs, "TQ1_0": tq1_0, "TQ2_0": tq2_0,
    "MXFP4": mxfp4, "NVFP4": nvfp4,
    "IQ2_XXS": iq2_xxs, "IQ2_XS": iq2_xs, "IQ2_S": iq2_s, "IQ3_XXS": iq3_xxs,
    "IQ3_S": iq3_s, "IQ1_S": iq1_s, "IQ1_M": iq1_m,
}


def ggml_dequant(t, blk):
    if blk.shape[0] == 0:
        return np.zeros(0, dtype=np.float32)
    with np.errstate(all="ignore"):
        v = DEQ[t](blk)
    return np.ascontiguousarray(v, dtype=np.float32).reshape(-1)
