"""Clean-room reader of the .llmc format, written from spec/FORMAT.md only.

Errors are raised as LlmcError(name, phase, msg, entry) with name one of the
section 8.1 names and phase 'open' or 'decode'.
"""
import io
import math
import os
import re
import stat
import struct
import sys
import hashlib
import unicodedata

import numpy as np
import ml_dtypes
import xxhash
import zstandard

sys.setrecursionlimit(20000)

MAGIC = b"\x89LMC\r\n\x1a\n"
ERRORS = ("Truncated", "Malformed", "Checksum", "Limit", "UnsupportedVersion",
          "UnsupportedCodec", "Decode", "DigestMismatch")


class LlmcError(Exception):
    def __init__(self, name, phase, msg="", entry=None):
        assert name in ERRORS, name
        self.name = name
        self.phase = phase
        self.msg = msg
        self.entry = entry
        super().__init__(f"{name} at {phase}: {msg}" + (f" [{entry}]" if entry else ""))


class NotRegularFile(Exception):
    """section 8 step 11: not an 8.1 error."""


def xxh3(b):
    return xxhash.xxh3_64_intdigest(bytes(b) if not isinstance(b, (bytes, bytearray)) else b)


def align_up(n, a):
    return -(-n // a) * a


# ---------------------------------------------------------------- msgpack (strict)
class MPError(Exception):
    pass


class MsgpackStrict:
    """Decodes one msgpack value under section 5's rules. Raises MPError('Malformed'|...)."""

    MAX_DEPTH = 1000  # section 8 step 4: deeper than 1000 MAY be Malformed

    def __init__(self, buf):
        self.b = memoryview(buf)
        self.n = len(buf)
        self.p = 0
        self.containers = 0

    def need(self, k):
        if self.p + k > self.n:
            raise MPError("truncated msgpack value")

    def u(self, fmt, k):
        self.need(k)
        v = struct.unpack_from(fmt, self.b, self.p)[0]
        self.p += k
        return v

    def raw(self, k):
        if k > self.n - self.p:
            raise MPError("declared length beyond the data")
        v = bytes(self.b[self.p:self.p + k])
        self.p += k
        return v

    def s(self, k):
        try:
            return self.raw(k).decode("utf-8", errors="strict")
        except UnicodeDecodeError:
            raise MPError("invalid UTF-8 in str")

    def arr(self, k, depth):
        if k > self.n - self.p:
            raise MPError("array declares more elements than bytes")
        self.containers += 1
        return [self.val(depth + 1) for _ in range(k)]

    def map(self, k, depth):
        if 2 * k > self.n - self.p:
            raise MPError("map declares more elements than bytes")
        self.containers += 1
        d = {}
        for _ in range(k):
            key = self.val(depth + 1)
            if type(key) is not str:
                raise MPError("non-str map key")
            v = self.val(depth + 1)
            if key in d:
                raise MPError("duplicate map key %r" % key)
            d[key] = v
        return d

    def val(self, depth=1):
        if depth > self.MAX_DEPTH:
            raise MPError("nesting beyond 1000")
        t = self.u("B", 1)
        if t <= 0x7F:
            return t
        if t >= 0xE0:
            return t - 256
        if 0x80 <= t <= 0x8F:
            return self.map(t & 15, depth)
        if 0x90 <= t <= 0x9F:
            return self.arr(t & 15, depth)
        if 0xA0 <= t <= 0xBF:
            return self.s(t & 31)
        if t == 0xC0:
            return None
        if t == 0xC2:
            return False
        if t == 0xC3:
            return True
        if t == 0xC4:
            return self.raw(self.u("B", 1))
        if t == 0xC5:
            return self.raw(self.u(">H", 2))
        if t == 0xC6:
            return self.raw(self.u(">I", 4))
        if t in (0xC7, 0xC8, 0xC9, 0xD4, 0xD5, 0xD6, 0xD7, 0xD8):
            raise MPError("msgpack extension type")
        if t == 0xCA:
            return float(self.u(">f", 4))
        if t == 0xCB:
            return self.u(">d", 8)
        if t == 0xCC:
            return self.u("B", 1)
        if t == 0xCD:
            return self.u(">H", 2)
        if t == 0xCE:
            return self.u(">I", 4)
        if t == 0xCF:
            return self.u(">Q", 8)
        if t == 0xD0:
            return self.u(">b", 1)
        if t == 0xD1:
            return self.u(">h", 2)
        if t == 0xD2:
            return self.u(">i", 4)
        if t == 0xD3:
            return self.u(">q", 8)
        if t == 0xD9:
            return self.s(self.u("B", 1))
        if t == 0xDA:
            return self.s(self.u(">H", 2))
        if t == 0xDB:
            return self.s(self.u(">I", 4))
        if t == 0xDC:
            return self.arr(self.u(">H", 2), depth)
        if t == 0xDD:
            return self.arr(self.u(">I", 4), depth)
        if t == 0xDE:
            return self.map(self.u(">H", 2), depth)
        if t == 0xDF:
            return self.map(self.u(">I", 4), depth)
        raise MPError("reserved msgpack type byte 0xc1")

    def one(self):
        v = self.val(1)
        if self.p != self.n:
            raise MPError("trailing bytes after the msgpack value")
        return v


def mp_decode(buf):
    """returns (value, container count); raises MPError."""
    m = MsgpackStrict(buf)
    v = m.one()
    return v, m.containers


def nest_depth(v):
    """nesting of maps/arrays; the value itself is level 1 if it is a container."""
    if isinstance(v, dict):
        return 1 + max((nest_depth(x) for x in v.values()), default=0)
    if isinstance(v, list):
        return 1 + max((nest_depth(x) for x in v), default=0)
    return 0


# ---------------------------------------------------------------- types
def is_uint(v):
    return type(v) is int and 0 <= v < 2 ** 64


def is_int(v):
    return type(v) is int


def is_float(v):
    return type(v) is float


def is_number(v):
    return type(v) in (int, float)


def is_str(v):
    return type(v) is str


def is_bin(v):
    return type(v) is bytes


def is_bool(v):
    return type(v) is bool


def is_map(v):
    return type(v) is dict


def is_array(v):
    return type(v) is list


DTYPES = {
    "bool": np.dtype(np.bool_),
    "uint8": np.dtype("u1"), "int8": np.dtype("i1"),
    "uint16": np.dtype("<u2"), "int16": np.dtype("<i2"),
    "uint32": np.dtype("<u4"), "int32": np.dtype("<i4"),
    "uint64": np.dtype("<u8"), "int64": np.dtype("<i8"),
    "float16": np.dtype("<f2"), "bfloat16": np.dtype(ml_dtypes.bfloat16),
    "float32": np.dtype("<f4"), "float64": np.dtype("<f8"),
    "float8_e4m3fn": np.dtype(ml_dtypes.float8_e4m3fn),
    "float8_e5m2": np.dtype(ml_dtypes.float8_e5m2),
}
UINT_OF_SIZE = {1: np.dtype("u1"), 2: np.dtype("<u2"), 4: np.dtype("<u4"), 8: np.dtype("<u8")}
FLOATS = ("float16", "bfloat16", "float32", "float64")
FMAX32 = {
    "float16": np.float32(65504.0),
    "bfloat16": np.float32((2 - 2 ** -7) * 2.0 ** 127),
    "float32": np.float32(np.finfo(np.float32).max),
    "float64": np.float32(np.finfo(np.float32).max),
}


def itemsize(dt):
    return DTYPES[dt].itemsize


def numel(shape):
    n = 1
    for d in shape:
        n *= d
    return n


def finalize(u, dtype):
    """steps 4 and 5 of section 7.2: clamp float32 u to +-M, convert (RNE)."""
    M = FMAX32[dtype]
    with np.errstate(all="ignore"):
        v = np.minimum(np.maximum(u.astype(np.float32), -M), M)
        return v.astype(DTYPES[dtype])


# ---------------------------------------------------------------- zstd frames
ZSTD_MAGIC = 0xFD2FB528


def zstd_check_decode(payload, n, err, window_cap=None):
    """One zstd frame declaring content size n, no dict, window <= max(n,2^17),
    nothing after it. Returns the decompressed bytes; raises err(msg)."""
    b = bytes(payload)
    if len(b) < 5:
        raise err("zstd payload too short")
    magic = struct.unpack_from("<I", b, 0)[0]
    if magic != ZSTD_MAGIC:
        raise err("not a zstd frame (magic %08x)" % magic)
    fhd = b[4]
    fcs_flag = fhd >> 6
    single = (fhd >> 5) & 1
    reserved = (fhd >> 3) & 1
    has_ck = (fhd >> 2) & 1
    did_flag = fhd & 3
    if reserved:
        raise err("zstd reserved bit set")
    p = 5
    wsize = None
    if not single:
        if p >= len(b):
            raise err("zstd header truncated")
        wd = b[p]
        p += 1
        exp = wd >> 3
        mant = wd & 7
        wlog = 10 + exp
        base = 1 << wlog
        wsize = base + (base // 8) * mant
    did_size = (0, 1, 2, 4)[did_flag]
    if p + did_size > len(b):
        raise err("zstd header truncated")
    did = int.from_bytes(b[p:p + did_size], "little") if did_size else 0
    p += did_size
    fcs_size = (1 if single else 0, 2, 4, 8)[fcs_flag]
    if fcs_size == 0:
        raise err("zstd frame without Frame_Content_Size")
    if p + fcs_size > len(b):
        raise err("zstd header truncated")
    fcs = int.from_bytes(b[p:p + fcs_size], "little")
    if fcs_size == 2:
        fcs += 256
    p += fcs_size
    if did != 0:
        raise err("zstd frame needs a dictionary")
    if fcs != n:
        raise err("zstd content size %d != %d" % (fcs, n))
    if single:
        wsize = fcs
    bound = max(n, 1 << 17) if window_cap is None else window_cap
    if wsize > bound:
        raise err("zstd window %d beyond %d" % (wsize, bound))
    # walk blocks to find the frame end
    while True:
        if p + 3 > len(b):
            raise err("zstd block header truncated")
        bh = b[p] | (b[p + 1] << 8) | (b[p + 2] << 16)
        p += 3
        last = bh & 1
        btype = (bh >> 1) & 3
        bsize = bh >> 3
        if btype == 3:
            raise err("zstd reserved block type")
        p += 1 if btype == 1 else bsize
        if p > len(b):
            raise err("zstd block beyond payload")
        if last:
            break
    if has_ck:
        p += 4
    if p != len(b):
        raise err("bytes after the zstd frame")
    try:
        d = zstandard.ZstdDecompressor(max_window_size=1 << 31).decompress(b, max_output_size=max(n, 1))
    except zstandard.ZstdError as e:
        raise err("zstd decode failed: %s" % e)
    if len(d) != n:
        raise err("zstd decoded %d bytes, expected %d" % (len(d), n))
    return d


# ---------------------------------------------------------------- exact chunk
def decode_exact_chunk(blob, n, k, err):
    """section 7.1 blob layout: returns a numpy uint array (width 8k) of n elements."""
    w = 8 * k
    if len(blob) < 1 + 5 * k:
        raise err("exact blob shorter than its header")
    r = blob[0]
    modes = []
    lens = []
    for i in range(k):
        modes.append(blob[1 + 5 * i])
        lens.append(struct.unpack_from("<I", blob, 2 + 5 * i)[0])
    if len(blob) != 1 + 5 * k + sum(lens):
        raise err("exact blob length %d != header's %d" % (len(blob), 1 + 5 * k + sum(lens)))
    if r >= w:
        raise err("rotation %d >= %d" % (r, w))
    planes = []
    p = 1 + 5 * k
    for i in range(k):
        pay = blob[p:p + lens[i]]
        p += lens[i]
        if modes[i] == 0:
            if lens[i] != n:
                raise err("raw plane length %d != %d" % (lens[i], n))
            planes.append(np.frombuffer(bytes(pay), dtype=np.uint8))
        elif modes[i] == 1:
            planes.append(np.frombuffer(zstd_check_decode(pay, n, err), dtype=np.uint8))
        else:
            raise err("plane mode %d" % modes[i])
    ud = UINT_OF_SIZE[k]
    if k == 1:
        s = planes[0].astype(np.uint8)
    else:
        s = np.zeros(n, dtype=ud)
        for i in range(k):
            s |= planes[i].astype(ud) << ud.type(8 * i)
    if r:
        s = (s >> ud.type(r)) | (s << ud.type(w - r))
    return s.astype(ud)


# ---------------------------------------------------------------- codecs
class DecodeErr:
    """helper: err(msg) -> LlmcError('Decode', 'decode', msg, entry)"""

    def __init__(self, entry):
        self.entry = entry

    def __call__(self, msg):
        return LlmcError("Decode", "decode", msg, self.entry)


def _closed(cfg, required, optional, err):
    for k in required:
        if k not in cfg:
            raise err("config lacks key %r" % k)
    for k in cfg:
        if k != "id" and k not in required and k not in optional:
            raise err("config has unknown key %r" % k)


def _int_in(cfg, key, lo, hi, err):
    v = cfg[key]
    if not is_int(v) or not (lo <= v <= hi):
        raise err("%s = %r not an int in [%s, %s]" % (key, v, lo, hi))
    return v


def matrix_rc(shape, one_d_as_row):
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return (1, shape[0]) if one_d_as_row else (shape[0], 1)
    return shape[0], numel(shape[1:])


class Codec:
    kind = "a2a"
    def validate(self, cfg, err): raise NotImplementedError
    def out_spec(self, spec, cfg, err): return spec
    def input_rows(self, a, b, spec, cfg): return a, b


class Exact(Codec):
    kind = "a2b"

    def validate(self, cfg, err):
        _closed(cfg, ("layout", "chunk_elems"), ("chunk_bytes",), err)
        if not is_int(cfg["layout"]) or cfg["layout"] != 1:
            raise err("exact layout must be 1")
        _int_in(cfg, "chunk_elems", 0, 2 ** 30, err)
        if "chunk_bytes" in cfg:
            _int_in(cfg, "chunk_bytes", 1, 2 ** 30, err)

    def accept(self, spec, cfg, err):
        dt, shape = spec
        N = numel(shape)
        C = cfg["chunk_elems"]
        if N > 0 and C == 0:
            raise err("chunk_elems 0 with elements")
        if N == 0 and C != 0:
            raise err("chunk_elems != 0 for an empty tensor")

    def nblobs(self, spec, cfg):
        N = numel(spec[1])
        C = cfg["chunk_elems"]
        return 0 if N == 0 else -(-N // C)

    def decode(self, spec, cfg, blobs, a, b, err):
        dt, shape = spec
        N = numel(shape)
        C = cfg["chunk_elems"]
        rows = shape[0] if shape else 1
        k = itemsize(dt)
        out_shape = [b - a] + list(shape[1:])
        if N == 0 or a == b:
            blobs.check_count(self.nblobs(spec, cfg))
            return np.zeros(out_shape, dtype=DTYPES[dt])
        W = N // rows
        e0, e1 = a * W, b * W
        blobs.check_count(self.nblobs(spec, cfg))
        i0, i1 = e0 // C, (e1 - 1) // C
        raw = [blobs.read(i) for i in range(i0, i1 + 1)]  # read (and check) all, then decode
        parts = []
        for i, blob in zip(range(i0, i1 + 1), raw):
            n = min(C, N - i * C)
            parts.append(decode_exact_chunk(blob, n, k, err))
        s = np.concatenate(parts)[e0 - i0 * C:e1 - i0 * C]
        if dt == "bool":
            if np.any(s > 1):
                raise err("bool byte other than 0/1")
        arr = s.view(DTYPES[dt]) if dt != "bool" else s.astype(np.uint8).view(np.bool_)
        return arr.reshape(out_shape)


class Affine(Codec):
    def validate(self, cfg, err):
        keys = ("bits", "granularity", "group_size", "clip", "clip_bits", "param_dtype")
        _closed(cfg, keys, (), err)
        _int_in(cfg, "bits", 1, 16, err)
        if cfg["granularity"] not in ("row", "group", "tensor") or not is_str(cfg["granularity"]):
            raise err("bad granularity")
        _int_in(cfg, "group_size", 1, 2 ** 24, err)
        if not is_str(cfg["clip"]) or cfg["clip"] not in ("none", "mse"):
            raise err("bad clip")
        cb = cfg["clip_bits"]
        if not is_number(cb) or not (1 <= cb <= 16):
            raise err("bad clip_bits")
        if not is_str(cfg["param_dtype"]) or cfg["param_dtype"] not in ("float16", "bfloat16", "float32"):
            raise err("bad param_dtype")

    def out_spec(self, spec, cfg, err):
        if spec[0] not in FLOATS:
            raise err("affine needs a float dtype, got %s" % spec[0])
        return ("uint16", spec[1])

    def nblobs(self, spec, cfg):
        return 1

    def decode(self, spec, cfg, blobs, codes, a, b, err):
        dt, shape = spec
        blobs.check_count(1)
        R, C = matrix_rc(shape, True)
        g = cfg["granularity"]
        gs = cfg["group_size"]
        if g == "row":
            P, G = R, 1
        elif g == "group":
            P, G = R, -(-C // gs)
        else:
            P, G = 1, 1
        pd = {"float16": np.dtype("<f2"), "bfloat16": np.dtype(ml_dtypes.bfloat16),
              "float32": np.dtype("<f4")}[cfg["param_dtype"]]
        bsz = pd.itemsize
        blob = blobs.read(0)
        if len(blob) != 2 * P * G * bsz:
            raise err("affine parameter blob %d bytes, expected %d" % (len(blob), 2 * P * G * bsz))
        par = np.frombuffer(blob, dtype=pd).astype(np.float32)
        scale = par[:P * G].reshape(P, G)
        off = par[P * G:].reshape(P, G)
        if not np.all(np.isfinite(par)):
            raise err("non-finite affine parameter")
        if np.any(scale < 0):
            raise err("negative scale")
        bits = cfg["bits"]
        if codes.size and int(codes.max()) > (1 << bits) - 1:
            raise err("code beyond 2^bits-1")
        out_shape = codes.shape
        if len(shape) >= 2:
            q = codes.reshape(b - a, C)
            rr = np.arange(a, b)[:, None]
            cc = np.arange(C)[None, :]
        elif len(shape) == 1:
            q = codes.reshape(1, b - a)
            rr = np.zeros((1, 1), dtype=np.int64)
            cc = np.arange(a, b)[None, :]
        else:
            q = codes.reshape(1, b - a)
            rr = np.zeros((1, 1), dtype=np.int64)
            cc = np.zeros((1, b - a), dtype=np.int64)
        if g == "row":
            pi, gi = np.broadcast_arrays(rr, np.zeros_like(cc))
        elif g == "group":
            pi, gi = np.broadcast_arrays(rr, cc // gs)
        else:
            pi, gi = np.broadcast_arrays(np.zeros_like(rr), np.zeros_like(cc))
        S = scale[pi, gi] if q.size else np.zeros(q.shape, np.float32)
        O = off[pi, gi] if q.size else np.zeros(q.shape, np.float32)
        with np.errstate(all="ignore"):
            t = q.astype(np.float32) * S
            u = t + O
        return finalize(u, dt).reshape(out_shape)


def dct_matrix(B, p):
    M = np.zeros((B, B), dtype=np.int64)
    for k in range(B):
        ck = math.sqrt(0.5) if k == 0 else 1.0
        for n in range(B):
            x = (2.0 ** p) * ck * math.sqrt(2.0 / B) * math.cos(math.pi * (2 * n + 1) * k / (2 * B))
            M[k, n] = int(math.floor(abs(x) + 0.5)) * (1 if x >= 0 else -1)
    return M


class BlockDCT(Codec):
    def validate(self, cfg, err):
        _closed(cfg, ("bits", "block", "precision", "scale", "offset"), (), err)
        bits = _int_in(cfg, "bits", 1, 16, err)
        B = cfg["block"]
        if not is_int(B) or B not in (4, 8, 16, 32, 64):
            raise err("bad block")
        p = _int_in(cfg, "precision", 8, 16, err)
        for key in ("scale", "offset"):
            v = cfg[key]
            if not is_number(v):
                raise err("%s not a number" % key)
            fv = float(v)
            if not math.isfinite(fv) or float(np.float32(fv)) != fv:
                raise err("%s not a finite binary32 value" % key)
            if type(v) is int and float(v) != v:
                raise err("%s not exactly a binary32 value" % key)
        if not (cfg["scale"] > 0):
            raise err("scale must be > 0")
        h = 1 << (bits - 1)
        m = int(np.abs(dct_matrix(B, p)).max())
        if not (B * B * h * m * m < 2 ** 53):
            raise err("blockdct config not exact in binary64")

    def out_spec(self, spec, cfg, err):
        if spec[0] not in FLOATS:
            raise err("blockdct needs a float dtype")
        if len(spec[1]) < 2:
            raise err("blockdct needs rank >= 2")
        return ("uint16", spec[1])

    def input_rows(self, a, b, spec, cfg):
        if a == b:
            return a, a  # "an empty range needs nothing"
        B = cfg["block"]
        R = spec[1][0]
        Rp = B * (R // B)
        a2 = B * (a // B) if a < Rp else a
        b2 = B * (-(-b // B)) if b <= Rp else b
        return a2, b2

    def nblobs(self, spec, cfg):
        return 0

    def decode(self, spec, cfg, blobs, codes, a, b, err):
        dt, shape = spec
        blobs.check_count(0)
        a2, b2 = self.input_rows(a, b, spec, cfg)
        R, C = matrix_rc(shape, True)
        B = cfg["block"]
        bits = cfg["bits"]
        h = 1 << (bits - 1)
        p = cfg["precision"]
        q = codes.reshape(b2 - a2, C)
        if q.size and int(q.max()) >= (1 << bits):
            raise err("code >= 2^bits")
        c = q.astype(np.int64) - h
        Rp, Cp = B * (R // B), B * (C // B)
        S = np.float32(cfg["scale"])
        O = np.float32(cfg["offset"])
        T = np.float32(S * np.float32(2.0 ** (-2 * p)))
        u = np.empty(q.shape, dtype=np.float32)
        M = dct_matrix(B, p).astype(np.float64)
        with np.errstate(all="ignore"):
            # edge everywhere first
            u[:] = (c.astype(np.float32) * S) + O
            core_r1 = min(b2, Rp)
            if core_r1 > a2 and Cp > 0:
                nbr = (core_r1 - a2) // B
                X = c[:core_r1 - a2, :Cp].astype(np.float64).reshape(nbr, B, Cp // B, B).transpose(0, 2, 1, 3)
                Z = M @ X @ M.T  # exact in binary64
                Zf = Z.transpose(0, 2, 1, 3).reshape(core_r1 - a2, Cp)
                u[:core_r1 - a2, :Cp] = (Zf.astype(np.float32) * T) + O
        res = finalize(u, dt)[a - a2:b - a2]
        return res.reshape([b - a] + list(shape[1:]))


class RowPerm(Codec):
    def validate(self, cfg, err):
        _closed(cfg, ("heads",), (), err)
        v = cfg["heads"]
        if not is_int(v) or v < 1:
            raise err("heads must be an int >= 1")

    def out_spec(self, spec, cfg, err):
        shape = spec[1]
        H = cfg["heads"]
        if len(shape) == 0 or shape[0] == 0 or shape[0] % (2 * H):
            raise err("rowperm: rows not a multiple of 2*heads")
        return spec

    def input_rows(self, a, b, spec, cfg):
        if a == b:
            return a, a
        D2 = spec[1][0] // cfg["heads"]
        return (a // D2) * D2, -(-b // D2) * D2

    def nblobs(self, spec, cfg):
        return 0

    def decode(self, spec, cfg, blobs, arr, a, b, err):
        blobs.check_count(0)
        a2, b2 = self.input_rows(a, b, spec, cfg)
        N = spec[1][0]
        H = cfg["heads"]
        D = N // (2 * H)
        # output row t = h*2D + i*D + j  <- stored row h*2D + 2j + i
        t = np.arange(a, b)
        hh = t // (2 * D)
        rem = t % (2 * D)
        i = rem // D
        j = rem % D
        src = hh * 2 * D + 2 * j + i - a2
        return arr[src]


class DiagScale(Codec):
    def validate(self, cfg, err):
        _closed(cfg, ("cols", "rows"), (), err)
        if not is_bool(cfg["cols"]) or not is_bool(cfg["rows"]):
            raise err("cols/rows must be bool")
        if not cfg["cols"] and not cfg["rows"]:
            raise err("both cols and rows false")

    def out_spec(self, spec, cfg, err):
        if spec[0] not in FLOATS:
            raise err("diagscale needs a float dtype")
        if numel(spec[1]) < 1:
            raise err("diagscale needs numel >= 1")
        return ("float32", spec[1])

    def nblobs(self, spec, cfg):
        return int(cfg["cols"]) + int(cfg["rows"])

    def _vec(self, blob, n, err):
        if len(blob) != 2 * n:
            raise err("diagscale vector of %d bytes, expected %d" % (len(blob), 2 * n))
        bits = np.frombuffer(blob, dtype="<u2")
        e = (bits >> 10) & 31
        if np.any(bits >> 15) or np.any(e < 1) or np.any(e > 30):
            raise err("diagscale entry not finite, positive and normal")
        return bits.view("<f2").astype(np.float32)

    def decode(self, spec, cfg, blobs, y, a, b, err):
        dt, shape = spec
        blobs.check_count(self.nblobs(spec, cfg))
        if len(shape) == 0:
            R, C = 1, 1
        else:
            R, C = shape[0], numel(shape[1:])
        raw = [blobs.read(i) for i in range(self.nblobs(spec, cfg))]  # read all, then decode
        cv = rv = None
        if cfg["cols"]:
            cv = self._vec(raw[0], C, err)
        if cfg["rows"]:
            rv = self._vec(raw[-1], R, err)
        yy = y.reshape(b - a, C).astype(np.float32)
        if np.any(np.isnan(yy)):
            raise err("NaN in diagscale input")
        with np.errstate(all="ignore"):
            t = yy * cv[None, :] if cv is not None else yy
            u = t * rv[a:b, None] if rv is not None else t
        return finalize(u, dt).reshape(y.shape)


# ---- video
VIDEO_BITS = {"vvc": 10, "hevc": 12, "ffv1": 16}
PIXFMT = {  # name: (chroma, depth)
    "yuv420p10le": ("420", 10), "gray10le": ("400", 10), "gray12le": ("400", 12),
    "gray": ("400", 8), "gray16le": ("400", 16),
}
PRESETS = {
    "vvc": ("faster", "fast", "medium", "slow", "slower"),
    "hevc": ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow",
             "slower", "veryslow", "placebo"),
}
HEX16 = re.compile(r"[0-9a-f]{16}\Z")
AV_FMT_INFO = {  # FFmpeg output format name -> (chroma, depth)
    "yuv420p": ("420", 8), "yuv420p10le": ("420", 10), "yuv420p10be": ("420", 10),
    "yuv420p12le": ("420", 12), "yuv420p12be": ("420", 12),
    "yuv420p16le": ("420", 16),
    "gray": ("400", 8), "gray10le": ("400", 10), "gray10be": ("400", 10),
    "gray12le": ("400", 12), "gray12be": ("400", 12), "gray16le": ("400", 16),
    "gray16be": ("400", 16), "gray9le": ("400", 9), "gray14le": ("400", 14),
}


class Video(Codec):
    kind = "a2b"

    def __init__(self, cid):
        self.cid = cid

    def validate(self, cfg, err):
        cid = self.cid
        lossy = cid != "ffv1"
        req = ["bits", "encoder", "max_width", "max_height", "target_pixels", "frames",
               "pix_fmt", "frame_hashes"]
        opt = ["encoder_version", "ffmpeg_version"]
        if lossy:
            req += ["qp", "preset"]
        if cid == "vvc":
            opt.append("vvenc_params")
        _closed(cfg, req, opt, err)
        enc = cfg["encoder"]
        allowed_enc = {"vvc": ("libvvenc",), "hevc": ("libx265",),
                       "av1": ("libsvtav1", "libaom-av1"), "ffv1": ("ffv1",)}[cid]
        if not is_str(enc) or enc not in allowed_enc:
            raise err("bad encoder %r" % (enc,))
        maxbits = VIDEO_BITS.get(cid) or (10 if enc == "libsvtav1" else 12)
        bits = _int_in(cfg, "bits", 1, maxbits, err)
        if lossy:
            qlo, qhi = {"vvc": (0, 63), "hevc": (0, 51), "av1": (1, 63)}[cid]
            _int_in(cfg, "qp", qlo, qhi, err)
            pr = cfg["preset"]
            if cid == "av1":
                _int_in(cfg, "preset", 0, 13 if enc == "libsvtav1" else 8, err)
            else:
                if not is_str(pr) or pr not in PRESETS[cid]:
                    raise err("bad preset %r" % (pr,))
        for k in opt:
            if k in cfg and not is_str(cfg[k]):
                raise err("%s must be a str" % k)
        fr = cfg["frames"]
        if not is_map(fr) or set(fr) != {"rows", "cols", "tile_rows", "tile_cols", "align", "min_size"}:
            raise err("frames must have exactly rows, cols, tile_rows, tile_cols, align, min_size")
        for k, v in fr.items():
            if not is_int(v) or not (1 <= v <= 2 ** 62):
                raise err("frames.%s not an int in [1, 2^62]" % k)
        want = (1, 2) if cid == "ffv1" else (8, 16)
        if (fr["align"], fr["min_size"]) != want:
            raise err("(align, min_size) must be %r" % (want,))
        al = fr["align"]
        if fr["tile_rows"] % al or fr["tile_cols"] % al:
            raise err("tiles not multiples of align")
        if fr["tile_rows"] > 16384 or fr["tile_cols"] > 16384 or fr["min_size"] > 16384:
            raise err("tile or min_size beyond 16384")
        for k in ("max_width", "max_height"):
            v = _int_in(cfg, k, al, 16384, err)
            if v % al:
                raise err("%s not a multiple of align" % k)
        _int_in(cfg, "target_pixels", 1, 2 ** 28, err)
        pf = cfg["pix_fmt"]
        allowed_pf = {
            "vvc": {"libvvenc": ("yuv420p10le",)},
            "hevc": {"libx265": ("gray10le", "gray12le")},
            "av1": {"libsvtav1": ("yuv420p10le",), "libaom-av1": ("gray10le", "gray12le")},
            "ffv1": {"ffv1": ("gray10le", "gray12le", "gray", "gray16le")},
        }[cid][enc]
        if not is_str(pf) or pf not in allowed_pf:
            raise err("pix_fmt %r not allowed" % (pf,))
        if PIXFMT[pf][1] < bits:
            raise err("pix_fmt depth < bits")
        fh = cfg["frame_hashes"]
        nb = -(-fr["rows"] // fr["tile_rows"])
        nc = -(-fr["cols"] // fr["tile_cols"])
        if not is_array(fh) or len(fh) != nb * nc or not all(is_str(x) and HEX16.match(x) for x in fh):
            raise err("frame_hashes must be n_frames strings of 16 lowercase hex digits")

    def accept(self, spec, cfg, err):
        dt, shape = spec
        if dt != "uint16":
            raise err("video stage input must be uint16")
        if len(shape) == 0 or numel(shape) == 0:
            raise err("video stage cannot store a 0-d or empty tensor")
        R, C = matrix_rc(shape, True)
        fr = cfg["frames"]
        if (fr["rows"], fr["cols"]) != (R, C):
            raise err("frames rows/cols %r != matrix %r" % ((fr["rows"], fr["cols"]), (R, C)))

    def nblobs(self, spec, cfg):
        fr = cfg["frames"]
        return -(-fr["rows"] // fr["tile_rows"]) * -(-fr["cols"] // fr["tile_cols"])

    def decode(self, spec, cfg, blobs, a, b, err):
        dt, shape = spec
        fr = cfg["frames"]
        blobs.check_count(self.nblobs(spec, cfg))
        rows, cols = fr["rows"], fr["cols"]
        tr, tc, al, ms = fr["tile_rows"], fr["tile_cols"], fr["align"], fr["min_size"]
        ncol = -(-cols // tc)
        if len(shape) >= 2:
            br0, br1, bc0, bc1 = a, b, 0, cols
            out = np.zeros((b - a, cols), dtype=np.uint16)
        else:
            br0, br1, bc0, bc1 = 0, 1, a, b
            out = np.zeros((1, b - a), dtype=np.uint16)
        if a == b:
            return out.reshape([b - a] + list(shape[1:]))
        bits = cfg["bits"]
        chroma, depth = PIXFMT[cfg["pix_fmt"]]
        cover = [(i, j) for i in range(br0 // tr, (br1 - 1) // tr + 1)
                 for j in range(bc0 // tc, (bc1 - 1) // tc + 1)]
        raw = {i * ncol + j: blobs.read(i * ncol + j) for i, j in cover}  # read all, then decode
        for i, j in cover:
            if True:
                k = i * ncol + j
                r0, r1 = i * tr, min((i + 1) * tr, rows)
                c0, c1 = j * tc, min((j + 1) * tc, cols)
                H = max(ms, align_up(r1 - r0, al))
                W = max(ms, align_up(c1 - c0, al))
                blob = raw[k]
                Y = decode_picture(self.cid, blob, W, H, chroma, depth, err)
                hsh = "%016x" % xxh3(Y.astype("<u2").tobytes())
                if hsh != cfg["frame_hashes"][k]:
                    raise err("frame %d luma hash %s != %s" % (k, hsh, cfg["frame_hashes"][k]))
                Yv = Y[:r1 - r0, :c1 - c0].astype(np.int64)
                if self.cid == "ffv1":
                    if np.any(Y >= (1 << bits)):
                        raise err("ffv1 sample >= 2^bits")
                    val = Yv
                else:
                    shift = depth - bits
                    half = (1 << shift) >> 1
                    val = np.minimum((Yv + half) >> shift, (1 << bits) - 1)
                # intersect with the box
                rr0, rr1 = max(r0, br0), min(r1, br1)
                cc0, cc1 = max(c0, bc0), min(c1, bc1)
                out[rr0 - br0:rr1 - br0, cc0 - bc0:cc1 - bc0] = val[rr0 - r0:rr1 - r0, cc0 - c0:cc1 - c0]
        return out.reshape([b - a] + list(shape[1:]))


def decode_picture(cid, blob, W, H, chroma, depth, err):
    import av
    fmt = {"vvc": "vvc", "hevc": "hevc", "av1": "obu", "ffv1": "nut"}[cid]
    try:
        with av.open(io.BytesIO(blob), format=fmt) as ct:
            vs = [s for s in ct.streams if s.type == "video"]
            if len(vs) != 1 or (cid == "ffv1" and len(ct.streams) != 1):
                raise err("blob does not hold exactly one video stream")
            st = vs[0]
            if cid == "ffv1" and st.codec_context.name != "ffv1":
                raise err("NUT stream is not FFV1")
            st.thread_type = "SLICE"
            st.thread_count = 1
            frames = []
            for fr in ct.decode(st):
                frames.append(fr)
                if len(frames) > 1:
                    break
    except LlmcError:
        raise
    except Exception as e:  # av.error.*
        raise err("video decoder failed: %s" % e)
    if len(frames) != 1:
        raise err("blob yields %d pictures, expected 1" % len(frames))
    f = frames[0]
    info = AV_FMT_INFO.get(f.format.name)
    if info is None:
        raise err("decoder output format %s unknown" % f.format.name)
    if (f.width, f.height) != (W, H):
        raise err("picture %dx%d, expected %dx%d" % (f.width, f.height, W, H))
    if info != (chroma, depth):
        raise err("picture chroma/depth %r, expected %r" % (info, (chroma, depth)))
    pl = f.planes[0]
    bps = 1 if depth <= 8 else 2
    raw = np.frombuffer(memoryview(pl), dtype=np.uint8)
    ls = pl.line_size
    raw = raw[:ls * H].reshape(H, ls)[:, :W * bps]
    if bps == 1:
        Y = raw.astype(np.uint16)
    else:
        be = f.format.name.endswith("be")
        Y = raw.copy().view(">u2" if be else "<u2").astype(np.uint16)
    return Y


# ---- ggml
GGML = {  # name: (id, bs, ts, decoded dtype)
    "F32": (0, 1, 4, "float32"), "F16": (1, 1, 2, "float16"), "BF16": (30, 1, 2, "bfloat16"),
    "F64": (28, 1, 8, "float64"), "I8": (24, 1, 1, "int8"), "I16": (25, 1, 2, "int16"),
    "I32": (26, 1, 4, "int32"), "I64": (27, 1, 8, "int64"),
    "Q4_0": (2, 32, 18, "float32"), "Q4_1": (3, 32, 20, "float32"),
    "Q5_0": (6, 32, 22, "float32"), "Q5_1": (7, 32, 24, "float32"),
    "Q8_0": (8, 32, 34, "float32"), "Q2_K": (10, 256, 84, "float32"),
    "Q3_K": (11, 256, 110, "float32"), "Q4_K": (12, 256, 144, "float32"),
    "Q5_K": (13, 256, 176, "float32"), "Q6_K": (14, 256, 210, "float32"),
    "Q8_K": (15, 256, 292, "float32"), "IQ4_NL": (20, 32, 18, "float32"),
    "IQ4_XS": (23, 256, 136, "float32"), "TQ1_0": (34, 256, 54, "float32"),
    "TQ2_0": (35, 256, 66, "float32"), "MXFP4": (39, 32, 17, "float32"),
    "NVFP4": (40, 64, 36, "float32"),
    "IQ2_XXS": (16, 256, 66, "float32"), "IQ2_XS": (17, 256, 74, "float32"),
    "IQ3_XXS": (18, 256, 98, "float32"), "IQ1_S": (19, 256, 50, "float32"),
    "IQ3_S": (21, 256, 110, "float32"), "IQ2_S": (22, 256, 82, "float32"),
    "IQ1_M": (29, 256, 56, "float32"),
}


class Ggml(Codec):
    kind = "a2b"

    def validate(self, cfg, err):
        _closed(cfg, ("layout", "type", "fields", "rows_per_blob"), ("chunk_bytes",), err)
        if not is_int(cfg["layout"]) or cfg["layout"] != 1:
            raise err("ggml layout must be 1")
        t = cfg["type"]
        if not is_str(t) or t not in GGML:
            raise err("unknown ggml type %r" % (t,))
        fl = cfg["fields"]
        if not is_array(fl) or not fl:
            raise err("fields must be a non-empty array")
        tot = 0
        for f in fl:
            if not is_array(f) or len(f) != 2 or not all(is_int(x) for x in f):
                raise err("field not an [n, w] int pair")
            n, w = f
            if w not in (1, 2, 4, 8) or n <= 0 or n % w:
                raise err("bad field %r" % (f,))
            tot += n
        if tot != GGML[t][2]:
            raise err("fields sum %d != block bytes %d" % (tot, GGML[t][2]))
        if not is_int(cfg["rows_per_blob"]) or cfg["rows_per_blob"] < 0:
            raise err("rows_per_blob must be an int >= 0")
        if "chunk_bytes" in cfg:
            _int_in(cfg, "chunk_bytes", 1, 2 ** 30, err)

    def geometry(self, spec, cfg):
        dt, shape = spec
        rows = shape[0] if shape else 1
        N = numel(shape)
        W = N // rows if rows else 0
        return rows, N, W

    def accept(self, spec, cfg, err):
        dt, shape = spec
        _, bs, ts, ddt = GGML[cfg["type"]]
        if dt != ddt:
            raise err("ggml type %s decodes to %s, spec is %s" % (cfg["type"], ddt, dt))
        if len(shape) == 0 and bs != 1:
            raise err("0-d tensor of a blocked ggml type")
        if shape and shape[-1] % bs:
            raise err("last dimension not a multiple of the block size")
        rows, N, W = self.geometry(spec, cfg)
        if W % bs:
            raise err("row of %d elements not a multiple of block size %d" % (W, bs))
        R = cfg["rows_per_blob"]
        if N == 0:
            if R != 0:
                raise err("rows_per_blob must be 0 for an empty tensor")
        elif not (1 <= R <= rows):
            raise err("rows_per_blob %d not in [1, %d]" % (R, rows))

    def nblobs(self, spec, cfg):
        rows, N, W = self.geometry(spec, cfg)
        if N == 0:
            return 0
        return -(-rows // cfg["rows_per_blob"])

    def blocks(self, spec, cfg, blobs, a, b, err):
        """the raw blocks of rows [a, b) as uint8 (nrows*row_bytes)."""
        rows, N, W = self.geometry(spec, cfg)
        _, bs, ts, ddt = GGML[cfg["type"]]
        blobs.check_count(self.nblobs(spec, cfg))
        if N == 0 or a == b:
            return np.zeros(0, dtype=np.uint8)
        R = cfg["rows_per_blob"]
        bpr = W // bs
        out = []
        raw = [blobs.read(j) for j in range(a // R, (b - 1) // R + 1)]  # read all, then decode
        for j, blob in zip(range(a // R, (b - 1) // R + 1), raw):
            nrow = min((j + 1) * R, rows) - j * R
            nb = nrow * bpr
            out.append(self.decode_blob(blob, nb, cfg, ts, err))
        allb = np.concatenate(out)
        r0 = (a // R) * R
        return allb[(a - r0) * bpr * ts:(b - r0) * bpr * ts]

    def decode_blob(self, blob, nb, cfg, ts, err):
        fl = cfg["fields"]
        F = len(fl)
        if len(blob) < 4 * F:
            raise err("ggml blob shorter than its lengths")
        lens = struct.unpack_from("<%dI" % F, blob, 0)
        if len(blob) != 4 * F + sum(lens):
            raise err("ggml blob length mismatch")
        blk = np.zeros((nb, ts), dtype=np.uint8)
        p = 4 * F
        off = 0
        for (n, w), ln in zip(fl, lens):
            pay = blob[p:p + ln]
            p += ln
            vals = decode_exact_chunk(pay, nb * n // w, w, err)
            blk[:, off:off + n] = vals.view(np.uint8).reshape(nb, n)
            off += n
        return blk.reshape(-1)

    def decode(self, spec, cfg, blobs, a, b, err):
        dt, shape = spec
        raw = self.blocks(spec, cfg, blobs, a, b, err)
        out_shape = [b - a] + list(shape[1:])
        t = cfg["type"]
        _, bs, ts, ddt = GGML[t]
        if bs == 1:
            return raw.view(DTYPES[ddt]).reshape(out_shape)
        blk = raw.reshape(-1, ts)
        vals = ggml_dequant(t, blk)
        return vals.reshape(out_shape)


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ggml_values import ggml_dequant  # noqa: E402

CODECS = {
    "exact": Exact(), "affine": Affine(), "blockdct": BlockDCT(), "rowperm": RowPerm(),
    "diagscale": DiagScale(), "ggml": Ggml(),
    "vvc": Video("vvc"), "hevc": Video("hevc"), "av1": Video("av1"), "ffv1": Video("ffv1"),
}


# ---------------------------------------------------------------- container
WIN_DEVICES = {"CON", "PRN", "AUX", "NUL"} | {"COM%d" % i for i in range(1, 10)} | {"LPT%d" % i for i in range(1, 10)}
WEIGHT_RE = re.compile(r"(.*\.(safetensors|gguf|index\.json)|pytorch_model.*\.bin)", re.S)
BAD_CHARS = set('\\<>:"|?*')


def check_attachment_name(name, mal, lim):
    if len(name.encode("utf-8")) > 1024:
        raise lim("attachment name longer than 1024 bytes")
    if "\\" in name or ":" in name or "\x00" in name:
        raise mal("attachment name with \\, : or NUL")
    comps = name.split("/")
    for c in comps:
        if c in ("", ".", ".."):
            raise mal("attachment name with an empty, . or .. component: %r" % name)
    for ch in name:
        if ord(ch) <= 0x1F or ord(ch) == 0x7F or ch in BAD_CHARS:
            raise mal("attachment name with a forbidden character: %r" % name)
    for c in comps:
        if len(c.encode("utf-8")) > 255:
            raise mal("attachment name component longer than 255 bytes")
        if c.endswith(".") or c.endswith(" "):
            raise mal("attachment name component ending in . or space")
        stem = c.split(".", 1)[0]
        if stem.isascii() and stem.upper() in WIN_DEVICES:
            raise mal("attachment name with a Windows device name: %r" % name)
    if "/" not in name and WEIGHT_RE.fullmatch(name.casefold()):
        raise mal("attachment name clashes with weight files: %r" % name)
    if comps[0] == ".llmc-unpack-stage":
        raise mal("attachment name with the unpack marker")


class Tensor:
    pass


class LlmcFile:
    def __init__(self, path):
        self.path = path
        self._open()

    # -- raw access
    def _read(self, off, n):
        self.f.seek(off)
        return self.f.read(n)

    def close(self):
        self.f.close()

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    def _open(self):
        def E(name, msg):
            return LlmcError(name, "open", msg)
        # step 11
        try:
            fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        except OSError as e:
            raise NotRegularFile(str(e))
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise NotRegularFile("not a regular file")
        self.f = os.fdopen(fd, "rb")
        size = st.st_size
        self.size = size
        # step 1
        head = self._read(0, 64)
        if size < 64:
            m = min(size, 8)
            if head[:m] == MAGIC[:m]:
                raise E("Truncated", "file shorter than 64 bytes")
            raise E("Malformed", "file shorter than 64 bytes, not an llmc file")
        if head[:8] != MAGIC:
            raise E("Malformed", "bad magic")
        if xxh3(head[:56]) != struct.unpack_from("<Q", head, 56)[0]:
            raise E("Checksum", "header checksum")
        major, minor, hsize = struct.unpack_from("<HHI", head, 8)
        req, opt, A = struct.unpack_from("<QQI", head, 16)
        if major != 1:
            raise E("UnsupportedVersion", "major version %d" % major)
        if any(head[36:56]):
            raise E("Malformed", "reserved header bytes not zero")
        if hsize != 64:
            raise E("Malformed", "header size %d" % hsize)
        if req != 0:
            raise E("UnsupportedVersion", "unknown required-feature bits %#x" % req)
        if not (8 <= A <= 4096) or (A & (A - 1)):
            raise E("Malformed", "alignment %d" % A)
        self.A = A
        self.minor = minor
        ds = align_up(64, A)
        self.data_start = ds
        if size < ds + 48:
            raise E("Truncated", "file shorter than data_start + 48")
        # step 2
        if any(self._read(64, ds - 64)):
            raise E("Checksum", "non-zero padding before data_start")
        # step 3
        foot = self._read(size - 48, 48)
        if foot[40:48] != MAGIC:
            raise E("Truncated", "no footer magic")
        if xxh3(foot[:32]) != struct.unpack_from("<Q", foot, 32)[0]:
            raise E("Checksum", "footer checksum")
        ioff, ilen, ick, fres = struct.unpack_from("<QQQQ", foot, 0)
        if fres != 0:
            raise E("Malformed", "footer reserved not zero")
        if ioff % A or ioff < ds or ioff + ilen != size - 48:
            raise E("Malformed", "footer geometry")
        if ilen > 2 ** 30:
            raise E("Limit", "index_length > 2^30")
        self.index_offset, self.index_length, self.index_checksum = ioff, ilen, ick
        # step 4
        ib = self._read(ioff, ilen)
        if xxh3(ib) != ick:
            raise E("Checksum", "index checksum")
        try:
            idx, ncont = mp_decode(ib)
        except MPError as e:
            raise E("Malformed", "index msgpack: %s" % e)
        if ncont > ilen // 16 + 65536:
            raise E("Limit", "index has %d containers" % ncont)
        self.index = idx
        self._schema(idx)
        self._tiling(idx)

    def _schema(self, idx):
        def mal(msg):
            return LlmcError("Malformed", "open", msg)

        def lim(msg):
            return LlmcError("Limit", "open", msg)
        if not is_map(idx):
            raise mal("index is not a map")
        md = idx.get("metadata", {})
        if not is_map(md):
            raise mal("metadata not a map")
        if nest_depth(md) > 32:
            raise lim("metadata nests deeper than 32")
        self.metadata = md
        if "data_end" not in idx or not is_uint(idx["data_end"]):
            raise mal("data_end missing or not a uint")
        if "tensors" not in idx or not is_array(idx["tensors"]):
            raise mal("tensors missing or not an array")
        atts = idx.get("attachments", [])
        if not is_array(atts):
            raise mal("attachments not an array")
        prev = idx.get("previous")
        if prev is not None or "previous" in idx:
            if not is_map(prev):
                raise mal("previous not a map")
            for k in ("index_offset", "index_length", "index_checksum"):
                if k not in prev or not is_uint(prev[k]):
                    raise mal("previous.%s missing or not a uint" % k)
        self.previous = prev
        self.tensors = {}
        self.order = []
        for t in idx["tensors"]:
            if not is_map(t):
                raise mal("tensor entry not a map")
            for k in ("quant", "rd", "pipeline"):
                if k in t and nest_depth(t[k]) > 32:
                    raise lim("tensor %s nests deeper than 32" % k)
            name = t.get("name")
            if not is_str(name):
                raise mal("tensor name missing or not a str")
            if name == "":
                raise mal("empty tensor name")
            if len(name.encode("utf-8")) > 1024:
                raise lim("tensor name longer than 1024 bytes")
            if name in self.tensors:
                raise mal("duplicate tensor name %r" % name)
            if name == "__metadata__":
                raise mal("tensor named __metadata__")
            dt = t.get("dtype")
            if not is_str(dt) or dt not in DTYPES:
                raise mal("tensor %r: bad dtype %r" % (name, dt))
            shape = t.get("shape")
            if not is_array(shape) or not all(is_int(d) for d in shape):
                raise mal("tensor %r: shape not an array of int" % name)
            if len(shape) > 16:
                raise lim("tensor %r: rank > 16" % name)
            if any(d < 0 for d in shape):
                raise mal("tensor %r: negative dimension" % name)
            if not all(is_uint(d) for d in shape):
                raise mal("tensor %r: dimension not a uint" % name)
            p = itemsize(dt)
            for d in shape:
                p *= d
                if p > 2 ** 62:
                    raise lim("tensor %r: bytes beyond 2^62" % name)
            for k in ("quant", "rd"):
                if k in t and not is_map(t[k]):
                    raise mal("tensor %r: %s not a map" % (name, k))
            if "alias_of" in t:
                if not is_str(t["alias_of"]):
                    raise mal("alias_of not a str")
                for k in ("pipeline", "blobs", "digest"):
                    if k in t:
                        raise mal("alias %r has %s" % (name, k))
            else:
                for k in ("pipeline", "blobs", "digest"):
                    if k not in t:
                        raise mal("stored tensor %r lacks %s" % (name, k))
                pl = t["pipeline"]
                if not is_array(pl):
                    raise mal("pipeline not an array")
                if not (1 <= len(pl) <= 8):
                    raise lim("pipeline of %d stages" % len(pl))
                for st in pl:
                    if not is_map(st) or not is_str(st.get("id")):
                        raise mal("stage config not a map with a str id")
                bl = t["blobs"]
                if not is_array(bl):
                    raise mal("blobs not an array")
                for bm in bl:
                    if not is_map(bm):
                        raise mal("blob not a map")
                    for k in ("stage", "offset", "length", "checksum"):
                        if k not in bm or not is_uint(bm[k]):
                            raise mal("blob %s missing or not a uint" % k)
                    if bm["stage"] >= len(pl):
                        raise mal("blob stage out of range")
                dg = t["digest"]
                if not is_map(dg) or not is_uint(dg.get("source")):
                    raise mal("digest.source missing or not a uint")
                if "decoded" in dg and not is_uint(dg["decoded"]):
                    raise mal("digest.decoded not a uint")
            self.tensors[name] = t
            self.order.append(name)
        for name in self.order:
            t = self.tensors[name]
            if "alias_of" in t:
                tg = self.tensors.get(t["alias_of"])
                if tg is None or "alias_of" in tg:
                    raise mal("alias %r names no stored tensor" % name)
                if tg["dtype"] != t["dtype"] or tg["shape"] != t["shape"]:
                    raise mal("alias %r differs in dtype or shape" % name)
        self.attachments = {}
        self.att_order = []
        folded = []
        for a in atts:
            if not is_map(a):
                raise mal("attachment entry not a map")
            name = a.get("name")
            if not is_str(name):
                raise mal("attachment name not a str")
            check_attachment_name(name, mal, lim)
            if name in self.attachments:
                raise mal("duplicate attachment name %r" % name)
            if not is_uint(a.get("size")):
                raise mal("attachment size")
            if a.get("encoding") not in ("raw", "zstd") or not is_str(a.get("encoding")):
                raise mal("attachment encoding")
            bm = a.get("blob")
            if not is_map(bm):
                raise mal("attachment blob not a map")
            for k in ("stage", "offset", "length", "checksum"):
                if k not in bm or not is_uint(bm[k]):
                    raise mal("attachment blob %s" % k)
            if bm["stage"] != 0:
                raise mal("attachment blob stage != 0")
            if a["encoding"] == "raw" and bm["length"] != a["size"]:
                raise mal("raw attachment length != size")
            folded.append(name.casefold())
            self.attachments[name] = a
            self.att_order.append(name)
        fs = sorted(folded)
        for i in range(len(fs)):
            if i and fs[i] == fs[i - 1]:
                raise mal("attachment names equal after case folding")
        fset = set(folded)
        for f in folded:
            parts = f.split("/")
            for j in range(1, len(parts)):
                if "/".join(parts[:j]) in fset:
                    raise mal("attachment name is a file and a directory")

    def _tiling(self, idx):
        def mal(msg):
            return LlmcError("Malformed", "open", msg)
        A = self.A
        bl = []
        for t in self.tensors.values():
            for bm in t.get("blobs", []):
                bl.append((bm["offset"], bm["length"]))
        for a in self.attachments.values():
            bl.append((a["blob"]["offset"], a["blob"]["length"]))
        for off, ln in bl:
            if off % A or ln < 1:
                raise mal("blob not aligned or empty")
        bl.sort()
        pos = self.data_start
        for off, ln in bl:
            if off != pos:
                raise mal("blobs do not tile the data region at %d" % pos)
            pos = align_up(off + ln, A)
        de = idx["data_end"]
        if pos != de:
            raise mal("data_end %d != end of blobs %d" % (de, pos))
        self.data_end = de
        if not (self.data_start <= de <= self.index_offset):
            raise mal("data_end out of place")
        if self.previous is None:
            if de != self.index_offset:
                raise mal("data_end != index_offset without previous")
        else:
            po = self.previous["index_offset"]
            if not (de <= po < self.index_offset):
                raise mal("previous.index_offset out of place")

    # -- blobs
    def read_blob(self, bm, entry):
        off, ln = bm["offset"], bm["length"]
        b = self._read(off, ln)
        if len(b) != ln or xxh3(b) != bm["checksum"]:
            raise LlmcError("Checksum", "decode", "blob checksum at %d" % off, entry)
        pad = align_up(off + ln, self.A) - (off + ln)
        if pad and any(self._read(off + ln, pad)):
            raise LlmcError("Checksum", "decode", "non-zero blob padding at %d" % (off + ln), entry)
        return b

    # -- tensors
    def names(self):
        return list(self.order)

    def resolve(self, name):
        t = self.tensors[name]
        if "alias_of" in t:
            return self.tensors[t["alias_of"]]
        return t

    def n_aliases(self, target):
        return sum(1 for t in self.tensors.values() if t.get("alias_of") == target)

    def _prepare(self, name, a=None, b=None):
        """order-of-checks steps 1-4; returns a plan."""
        if name not in self.tensors:
            raise KeyError(name)
        t = self.resolve(name)
        tname = t["name"]
        err = DecodeErr(name)

        def lim(msg):
            return LlmcError("Limit", "decode", msg, name)
        dt, shape = t["dtype"], list(t["shape"])
        isz = itemsize(dt)
        # rule 9
        p = isz
        for d in shape:
            if d:
                p *= d
        if p > 2 ** 62:
            raise lim("non-zero dimensions x itemsize beyond 2^62")
        # rule 10
        D = numel(shape) * isz
        L = sum(bm["length"] for bm in t["blobs"])
        ids = [st["id"] for st in t["pipeline"]]
        k = self.n_aliases(tname)
        if ids == ["exact"]:
            X, held = 2 ** 15, True
        elif ids[-1] == "ggml" and all(i == "rowperm" for i in ids[:-1]):
            X, held = 2 ** 20, True
        else:
            X, held = 2 ** 15, k >= 1
        if held and (k + 1) * D > X * L:
            raise lim("declared bytes beyond the expansion bound")
        # step 2
        codecs = []
        for st in t["pipeline"]:
            c = CODECS.get(st["id"])
            if c is None:
                raise LlmcError("UnsupportedCodec", "decode", "codec %r" % st["id"], name)
            c.validate(st, err)
            codecs.append(c)
        # step 3
        n = len(codecs)
        if any(c.kind != "a2a" for c in codecs[:-1]) or codecs[-1].kind != "a2b":
            raise err("invalid pipeline shape")
        # step 4
        rows = shape[0] if shape else 1
        whole = a is None
        if whole:
            a, b = 0, rows
        if not (0 <= a <= b <= rows):
            raise err("row range [%d, %d) outside [0, %d]" % (a, b, rows))
        specs = [(dt, shape)]
        for i in range(n - 1):
            specs.append(codecs[i].out_spec(specs[i], t["pipeline"][i], err))
        codecs[-1].accept(specs[-1], t["pipeline"][-1], err)
        ranges = [(a, b)]
        for i in range(n - 1):
            ranges.append(codecs[i].input_rows(ranges[i][0], ranges[i][1], specs[i], t["pipeline"][i]))
        return dict(t=t, err=err, codecs=codecs, specs=specs, ranges=ranges, whole=whole,
                    shape=shape, dt=dt, a=a, b=b, name=name)

    def _stage_blobs(self, plan, s):
        return StageBlobs(self, [bm for bm in plan["t"]["blobs"] if bm["stage"] == s],
                          plan["err"], plan["name"])

    def read_tensor(self, name, a=None, b=None):
        plan = self._prepare(name, a, b)
        t, err, codecs, specs, ranges = plan["t"], plan["err"], plan["codecs"], plan["specs"], plan["ranges"]
        n = len(codecs)
        ra, rb = ranges[n - 1]
        arr = codecs[n - 1].decode(specs[n - 1], t["pipeline"][n - 1], self._stage_blobs(plan, n - 1), ra, rb, err)
        for i in range(n - 2, -1, -1):
            oa, ob = ranges[i]
            arr = codecs[i].decode(specs[i], t["pipeline"][i], self._stage_blobs(plan, i), arr, oa, ob, err)
        arr = np.ascontiguousarray(arr, dtype=DTYPES[plan["dt"]])
        rows = plan["shape"][0] if plan["shape"] else 1
        if plan["whole"] or (plan["a"], plan["b"]) == (0, rows):
            # a read of all rows is a whole decode (open question 8): compare digest.decoded
            dg = t["digest"].get("decoded")
            if dg is not None and xxh3(arr.tobytes()) != dg:
                raise LlmcError("DigestMismatch", "decode", "digest.decoded", name)
        if plan["whole"]:
            arr = arr.reshape(plan["shape"])
        else:
            arr = arr.reshape([plan["b"] - plan["a"]] + plan["shape"][1:])
        return arr

    def ggml_blocks(self, name):
        """the final ggml stage's blocks, all rows, stored order (section 7.8)."""
        plan = self._prepare(name)
        t = plan["t"]
        n = len(plan["codecs"])
        if t["pipeline"][-1]["id"] != "ggml":
            raise plan["err"]("last stage is not ggml")
        # earlier stages: no blobs of their own allowed to be wrong? (rowperm owns none)
        spec = plan["specs"][n - 1]
        rows = spec[1][0] if spec[1] else 1
        return plan["codecs"][-1].blocks(spec, t["pipeline"][-1], self._stage_blobs(plan, n - 1),
                                         0, rows, plan["err"]).tobytes()

    # -- attachments
    def read_attachment(self, name):
        a = self.attachments[name]
        bm = a["blob"]
        b = self.read_blob(bm, name)
        if a["encoding"] == "raw":
            return b
        size = a["size"]
        if size > 2 ** 15 * bm["length"]:
            raise LlmcError("Limit", "decode", "zstd attachment size beyond 2^15 x length", name)
        return zstd_check_decode(b, size, DecodeErr(name))

    # -- verifier chain (section 9)
    def walk_chain(self):
        """returns (ok, message, links)."""
        prev = self.previous
        cur = self.index_offset
        links = 0
        A = self.A
        while prev is not None:
            links += 1
            if links > 4096:
                return False, "more than 4096 links", links
            try:
                po, pl, pc = prev["index_offset"], prev["index_length"], prev["index_checksum"]
            except (KeyError, TypeError):
                return False, "Malformed: previous map", links
            if not all(is_uint(x) for x in (po, pl, pc)):
                return False, "Malformed: previous map types", links
            if not (po < cur) or po < self.data_end:
                return False, "Malformed: previous offset not before this index", links
            if po + pl + 48 > cur:
                return False, "Checksum/Malformed: superseded index beyond its successor", links
            ib = self._read(po, pl)
            if len(ib) != pl or xxh3(ib) != pc:
                return False, "Checksum: superseded index", links
            ft = self._read(po + pl, 48)
            if ft[40:48] != MAGIC or xxh3(ft[:32]) != struct.unpack_from("<Q", ft, 32)[0] \
                    or struct.unpack_from("<Q", ft, 24)[0] != 0:
                return False, "Checksum: superseded footer", links
            fo, fl, fc = struct.unpack_from("<QQQ", ft, 0)
            if (fo, fl, fc) != (po, pl, pc):
                return False, "Malformed: superseded footer fields differ", links
            end = po + pl + 48
            gap = self._read(end, cur - end)
            if any(gap):
                return False, "Checksum: non-zero gap after superseded footer", links
            if align_up(end, A) != cur:
                return False, "Malformed: gap not the alignment padding", links
            try:
                v, ncont = mp_decode(ib)
            except MPError as e:
                return False, "Malformed: superseded index msgpack: %s" % e, links
            if ncont > pl // 16 + 65536:
                return False, "Limit: superseded index container count", links
            if not is_map(v):
                return False, "Malformed: superseded index not a map", links
            cur = po
            if "previous" in v:
                prev = v["previous"]
                if not is_map(prev):
                    return False, "Malformed: previous not a map", links
            else:
                prev = None
        if cur != self.data_end:
            return False, "chain does not end at data_end", links
        return True, "ok", links


class StageBlobs:
    def __init__(self, f, bms, err, entry):
        self.f, self.bms, self.err, self.entry = f, bms, err, entry

    def check_count(self, n):
        if len(self.bms) != n:
            raise self.err("stage owns %d blobs, expected %d" % (len(self.bms), n))

    def read(self, i):
        return self.f.read_blob(self.bms[i], self.entry)


# ---------------------------------------------------------------- GGUF rebuild (section 7.8)
LAYOUT_NAME = ".llmc/gguf-layout.msgpack"
HEX64 = re.compile(r"[0-9a-f]{64}\Z")


def rebuild_gguf(lf):
    """returns the GGUF bytes; raises LlmcError."""
    an = LAYOUT_NAME
    if an not in lf.attachments:
        raise KeyError("no GGUF layout record")
    raw = lf.read_attachment(an)

    def bad(msg):
        return LlmcError("Decode", "decode", "layout record: " + msg, an)
    try:
        rec, ncont = mp_decode(raw)
    except MPError as e:
        raise bad(str(e))
    if ncont > len(raw) // 8 + 65536:
        raise bad("too many containers")
    if not is_map(rec):
        raise bad("not a map")
    for k, ok in (("version", is_int), ("size", is_uint), ("sha256", is_str), ("prefix", is_bin),
                  ("tensors", is_array), ("tail", is_bin)):
        if k not in rec or not ok(rec[k]):
            raise bad("key %s missing or of another type" % k)
    if rec["version"] != 1:
        raise bad("version != 1")
    if not HEX64.match(rec["sha256"]):
        raise bad("sha256 not 64 lowercase hex digits")
    total = len(rec["prefix"]) + len(rec["tail"])
    for e in rec["tensors"]:
        if not is_map(e):
            raise bad("tensors entry not a map")
        for k, ok in (("name", is_str), ("type", is_str), ("size", is_uint)):
            if k not in e or not ok(e[k]):
                raise bad("entry key %s" % k)
        if ("tensor" in e) == ("data" in e):
            raise bad("entry with both or neither of tensor and data")
        if "tensor" in e and not is_str(e["tensor"]):
            raise bad("tensor not a str")
        if "data" in e:
            if not is_bin(e["data"]):
                raise bad("data not a bin")
            if len(e["data"]) != e["size"]:
                raise bad("data length != size")
        if "gap" in e and not is_bin(e["gap"]):
            raise bad("gap not a bin")
        total += e["size"] + len(e.get("gap", b""))
    if total != rec["size"]:
        raise bad("parts do not add up")
    out = [rec["prefix"]]
    for e in rec["tensors"]:
        if "data" in e:
            out.append(e["data"])
        else:
            tn = e["tensor"]
            if tn not in lf.tensors:
                raise LlmcError("Decode", "decode", "layout record names no tensor %r" % tn, an)
            t = lf.resolve(tn)
            last = t["pipeline"][-1]
            if last.get("id") != "ggml" or last.get("type") != e["type"]:
                raise LlmcError("Decode", "decode", "tensor %r is not ggml %s" % (tn, e["type"]), an)
            blk = lf.ggml_blocks(tn)
            if len(blk) != e["size"]:
                raise LlmcError("Decode", "decode", "blocks of %r are %d bytes, not %d" % (tn, len(blk), e["size"]), an)
            out.append(blk)
        out.append(e.get("gap", b""))
    out.append(rec["tail"])
    data = b"".join(out)
    if hashlib.sha256(data).hexdigest() != rec["sha256"]:
        raise LlmcError("DigestMismatch", "decode", "rebuilt GGUF SHA-256", an)
    return data


# ---------------------------------------------------------------- verify
def verify(path):
    """returns (intact, lines)."""
    lines = []
    try:
        lf = LlmcFile(path)
    except LlmcError as e:
        return False, ["open: %s" % e]
    except NotRegularFile as e:
        return False, ["not a regular file: %s" % e]
    ok = True
    with lf:
        done = {}
        for n in lf.names():
            tg = lf.resolve(n)["name"]
            try:
                if tg in done and done[tg] is None:
                    pass
                else:
                    lf.read_tensor(n)
                    done[tg] = None
            except LlmcError as e:
                ok = False
                lines.append("tensor %s: %s" % (n, e))
        for n in lf.att_order:
            try:
                lf.read_attachment(n)
            except LlmcError as e:
                ok = False
                lines.append("attachment %s: %s" % (n, e))
        cok, msg, links = lf.walk_chain()
        lines.append("chain: %d link(s), %s" % (links, msg))
        ok = ok and cok
    return ok, lines


if __name__ == "__main__":
    import argparse
    ap = argparse.ArgumentParser()
    ap.add_argument("cmd", choices=["verify", "list", "gguf"])
    ap.add_argument("path")
    ap.add_argument("-o")
    ns = ap.parse_args()
    if ns.cmd == "verify":
        ok, lines = verify(ns.path)
        print("\n".join(lines))
        print("intact" if ok else "NOT intact")
        sys.exit(0 if ok else 1)
    lf = LlmcFile(ns.path)
    if ns.cmd == "list":
        for n in lf.names():
            t = lf.tensors[n]
            print(n, t["dtype"], t["shape"], [s["id"] for s in lf.resolve(n)["pipeline"]])
        for n in lf.att_order:
            print("attachment", n, lf.attachments[n]["size"])
    else:
        data = rebuild_gguf(lf)
        if ns.o:
            with open(ns.o, "wb") as f:
                f.write(data)
        print(len(data), hashlib.sha256(data).hexdigest())
