"""Clean-room reader for the .llmc archive format, written from spec/FORMAT.md only.

Usage:
    r = Reader(path)            # raises LlmcError(name, phase='open') on open failures
    r.tensor_names()
    arr = r.decode(name)        # numpy array; raises LlmcError(name, phase='decode')
    data = r.attachment(name)   # bytes

Error names are those of FORMAT.md section 8.1.
"""
from __future__ import annotations

import io
import math
import os
import re
import stat
import struct

import msgpack
import numpy as np
import xxhash
import zstandard

try:
    import ml_dtypes
except ImportError:  # pragma: no cover
    ml_dtypes = None

MAGIC = b"\x89LMC\r\n\x1a\n"
ERRORS = ("Truncated", "Malformed", "Checksum", "Limit", "UnsupportedVersion",
          "UnsupportedCodec", "Decode", "DigestMismatch")


class LlmcError(Exception):
    def __init__(self, name, msg="", phase=None):
        assert name in ERRORS, name
        self.name = name
        self.phase = phase
        super().__init__(f"{name}: {msg}")


def h64(b) -> int:
    return xxhash.xxh3_64_intdigest(bytes(b))


def align_up(n, a):
    return -(-n // a) * a


def E(name, msg=""):
    return LlmcError(name, msg)


# ---------------------------------------------------------------- dtypes (§5.4)
def _np_dtype(name):
    base = {
        "bool": np.dtype(np.bool_), "uint8": np.dtype("<u1"), "int8": np.dtype("<i1"),
        "uint16": np.dtype("<u2"), "int16": np.dtype("<i2"), "uint32": np.dtype("<u4"),
        "int32": np.dtype("<i4"), "uint64": np.dtype("<u8"), "int64": np.dtype("<i8"),
        "float16": np.dtype("<f2"), "float32": np.dtype("<f4"), "float64": np.dtype("<f8"),
    }
    if name in base:
        return base[name]
    if name == "bfloat16":
        return np.dtype(ml_dtypes.bfloat16)
    if name == "float8_e4m3fn":
        return np.dtype(ml_dtypes.float8_e4m3fn)
    if name == "float8_e5m2":
        return np.dtype(ml_dtypes.float8_e5m2)
    return None


DTYPES = ("bool", "uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64",
          "float16", "bfloat16", "float32", "float64", "float8_e4m3fn", "float8_e5m2")
ITEMSIZE = {d: _np_dtype(d).itemsize for d in DTYPES}
FLOATS = ("float16", "bfloat16", "float32", "float64")
UINT_BY_SIZE = {1: np.uint8, 2: np.dtype("<u2"), 4: np.dtype("<u4"), 8: np.dtype("<u8")}


# ---------------------------------------------------------------- type helpers (§1)
def is_uint(v):
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2 ** 64


def is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def is_float(v):
    return isinstance(v, float)


def is_number(v):
    return is_int(v) or is_float(v)


# ---------------------------------------------------------------- strict msgpack (§5, §8 step 4)
class _Dup(Exception):
    pass


def _pairs_hook(pairs):
    d = {}
    for k, v in pairs:
        if not isinstance(k, str):
            raise E("Malformed", f"non-str map key {k!r}")
        if k in d:
            raise E("Malformed", f"duplicate map key {k!r}")
        d[k] = v
    return d


def _ext_hook(code, data):
    raise E("Malformed", f"msgpack extension type {code}")


def _walk_check(v, depth, counter):
    # extension/timestamp rejection, container count, returns max nesting
    if isinstance(v, (msgpack.ExtType, msgpack.Timestamp)):
        raise E("Malformed", "msgpack extension type")
    if isinstance(v, dict):
        counter[0] += 1
        return 1 + max([_walk_check(x, depth + 1, counter) for x in v.values()] or [0])
    if isinstance(v, list):
        counter[0] += 1
        return 1 + max([_walk_check(x, depth + 1, counter) for x in v] or [0])
    return 0


def strict_unpack(data: bytes):
    n = len(data)
    try:
        up = msgpack.Unpacker(raw=False, strict_map_key=False, use_list=True,
                              object_pairs_hook=_pairs_hook, ext_hook=_ext_hook,
                              timestamp=0, max_buffer_size=max(n, 1),
                              max_str_len=n, max_bin_len=n, max_array_len=n,
                              max_map_len=n, max_ext_len=n)
        up.feed(data)
        obj = up.unpack()
        if up.tell() != n:
            raise E("Malformed", "trailing bytes after the index value")
    except LlmcError:
        raise
    except msgpack.OutOfData:
        raise E("Malformed", "incomplete msgpack")
    except UnicodeDecodeError:
        raise E("Malformed", "invalid UTF-8 str")
    except Exception as e:
        raise E("Malformed", f"invalid msgpack: {e!r}")
    counter = [0]
    _walk_check(obj, 0, counter)
    if counter[0] > n // 16 + 65536:
        raise E("Limit", "too many containers")
    return obj


def _nesting(v):
    if isinstance(v, dict):
        return 1 + max([_nesting(x) for x in v.values()] or [0])
    if isinstance(v, list):
        return 1 + max([_nesting(x) for x in v] or [0])
    return 0


# ---------------------------------------------------------------- blob map check
def _check_blobmap(b, nstages):
    if not isinstance(b, dict):
        raise E("Malformed", "blob is not a map")
    for k in ("stage", "offset", "length", "checksum"):
        if k not in b or not is_uint(b[k]):
            raise E("Malformed", f"blob key {k} missing or not uint")
    if b["stage"] >= nstages:
        raise E("Malformed", "blob stage out of range")


_DEVICES = {"con", "prn", "aux", "nul"} | {f"com{i}" for i in range(1, 10)} | {f"lpt{i}" for i in range(1, 10)}
_WEIGHT = re.compile(r".*\.(safetensors|gguf|index\.json)|pytorch_model.*\.bin")


def _valid_attachment_name(name):
    """§5.5 names (rev 1.4 'Names safe to unpack' included); the set rules are separate."""
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name) or any(c in name for c in '\\<>:"|?*'):
        return False
    for comp in name.split("/"):
        if comp in ("", ".", ".."):
            return False
        try:
            if len(comp.encode("utf-8")) > 255:
                return False
        except UnicodeEncodeError:
            return False
        if comp[-1] in ". " or comp.split(".")[0].lower() in _DEVICES:
            return False
    if "/" not in name and _WEIGHT.fullmatch(name.casefold()):
        return False
    return name.split("/")[0] != ".llmc-unpack-stage"


def _check_name_set(names):
    """§5.5: no two names equal after case folding; no file that is another's directory."""
    folded = [n.casefold() for n in names]
    if len(set(folded)) != len(folded):
        raise E("Malformed", "attachment names equal after case folding")
    fs = set(folded)
    for f in folded:
        parts = f.split("/")
        for i in range(1, len(parts)):
            if "/".join(parts[:i]) in fs:
                raise E("Malformed", f"attachment {f!r} under a file of the same name")


# ================================================================= Reader
class Reader:
    def __init__(self, path):
        try:
            self._open(path)
        except LlmcError as e:
            e.phase = "open"
            raise

    # ------------------------------------------------------------ open (§8 steps 11, 1-6)
    def _open(self, path):
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise OSError("not a regular file")  # §8 step 11: not an §8.1 error
        with open(path, "rb") as f:
            self.buf = f.read()
        buf = self.buf
        size = len(buf)
        # step 1: header
        if size < 64:
            # Interpretation (see README): "its bytes are a prefix of the magic" read as
            # "its first min(size, 8) bytes agree with the magic".
            if buf[:min(size, 8)] == MAGIC[:min(size, 8)]:
                raise E("Truncated", "file shorter than 64 bytes (prefix of magic)")
            raise E("Malformed", "file shorter than 64 bytes")
        if buf[:8] != MAGIC:
            raise E("Malformed", "bad magic")
        if h64(buf[0:56]) != struct.unpack_from("<Q", buf, 56)[0]:
            raise E("Checksum", "header checksum")
        major, _minor, hsize = struct.unpack_from("<HHI", buf, 8)
        req, _opt, A = struct.unpack_from("<QQI", buf, 16)
        if major != 1:
            raise E("UnsupportedVersion", f"major {major}")
        if any(buf[36:56]):
            raise E("Malformed", "reserved header bytes non-zero")
        if hsize != 64:
            raise E("Malformed", "header size")
        if req != 0:
            raise E("UnsupportedVersion", f"unknown required feature bits {req:#x}")
        if A < 8 or A > 4096 or (A & (A - 1)):
            raise E("Malformed", "alignment")
        self.A = A
        self.data_start = ds = align_up(64, A)
        if size < ds + 48:
            raise E("Truncated", "shorter than data_start + 48")
        # step 2
        if any(buf[64:ds]):
            raise E("Checksum", "padding before data_start")
        # step 3: footer
        ft = buf[size - 48:]
        if ft[40:48] != MAGIC:
            raise E("Truncated", "footer magic missing")
        if h64(ft[0:32]) != struct.unpack_from("<Q", ft, 32)[0]:
            raise E("Checksum", "footer checksum")
        ioff, ilen, icks, fres = struct.unpack_from("<QQQQ", ft, 0)
        if fres != 0:
            raise E("Malformed", "footer reserved")
        if ioff % A or ioff < ds or ioff + ilen != size - 48:
            raise E("Malformed", "footer geometry")
        if ilen > 2 ** 30:
            raise E("Limit", "index length")
        self.index_offset = ioff
        # step 4
        ib = buf[ioff:ioff + ilen]
        if h64(ib) != icks:
            raise E("Checksum", "index checksum")
        idx = strict_unpack(ib)
        if not isinstance(idx, dict):
            raise E("Malformed", "index is not a map")
        # nesting of free-form maps
        md = idx.get("metadata", {})
        if isinstance(md, dict) and _nesting(md) > 32:
            raise E("Limit", "metadata nesting")
        self.index = idx
        self._check_schema(idx)
        self._check_tiling(idx)

    # ------------------------------------------------------------ step 5
    def _check_schema(self, idx):
        if "metadata" in idx and not isinstance(idx["metadata"], dict):
            raise E("Malformed", "metadata not a map")
        if "data_end" not in idx or not is_uint(idx["data_end"]):
            raise E("Malformed", "data_end")
        if "tensors" not in idx or not isinstance(idx["tensors"], list):
            raise E("Malformed", "tensors")
        atts = idx.get("attachments", [])
        if not isinstance(atts, list):
            raise E("Malformed", "attachments")
        if "previous" in idx:
            p = idx["previous"]
            if not isinstance(p, dict) or not all(is_uint(p.get(k)) for k in
                                                  ("index_offset", "index_length", "index_checksum")):
                raise E("Malformed", "previous")
        self.tensors = {}
        self.order = []
        for t in idx["tensors"]:
            if not isinstance(t, dict):
                raise E("Malformed", "tensor entry not a map")
            name = t.get("name")
            if not isinstance(name, str) or not name:
                raise E("Malformed", "tensor name")
            if name in self.tensors:
                raise E("Malformed", f"duplicate tensor name {name}")
            if len(name.encode()) > 1024:
                raise E("Limit", "tensor name too long")
            if name == "__metadata__":
                raise E("Malformed", "reserved tensor name")
            if t.get("dtype") not in DTYPES:
                raise E("Malformed", f"{name}: dtype")
            shape = t.get("shape")
            if not isinstance(shape, list):
                raise E("Malformed", f"{name}: shape")
            if len(shape) > 16:
                raise E("Limit", f"{name}: rank")
            for d in shape:
                if not is_int(d) or d < 0:
                    raise E("Malformed", f"{name}: dimension")
                if not is_uint(d):
                    raise E("Malformed", f"{name}: dimension")
            acc = ITEMSIZE[t["dtype"]]
            for d in shape:
                acc *= d
                if acc > 2 ** 62:
                    raise E("Limit", f"{name}: tensor bytes")
            for k in ("quant", "rd"):
                if k in t:
                    if not isinstance(t[k], dict):
                        raise E("Malformed", f"{name}: {k}")
                    if _nesting(t[k]) > 32:
                        raise E("Limit", f"{name}: {k} nesting")
            if "alias_of" in t:
                if not isinstance(t["alias_of"], str):
                    raise E("Malformed", f"{name}: alias_of")
                if any(k in t for k in ("pipeline", "blobs", "digest")):
                    raise E("Malformed", f"{name}: alias with pipeline/blobs/digest")
            else:
                pl = t.get("pipeline")
                if not isinstance(pl, list):
                    raise E("Malformed", f"{name}: pipeline")
                if not 1 <= len(pl) <= 8:
                    raise E("Limit", f"{name}: pipeline length")
                for st_ in pl:
                    if not isinstance(st_, dict) or not isinstance(st_.get("id"), str):
                        raise E("Malformed", f"{name}: stage id")
                    if _nesting(st_) > 32:
                        raise E("Limit", f"{name}: config nesting")
                bl = t.get("blobs")
                if not isinstance(bl, list):
                    raise E("Malformed", f"{name}: blobs")
                for b in bl:
                    _check_blobmap(b, len(pl))
                dg = t.get("digest")
                if not isinstance(dg, dict) or not is_uint(dg.get("source")):
                    raise E("Malformed", f"{name}: digest")
                if "decoded" in dg and not is_uint(dg["decoded"]):
                    raise E("Malformed", f"{name}: digest.decoded")
            self.tensors[name] = t
            self.order.append(name)
        for name in self.order:
            t = self.tensors[name]
            if "alias_of" in t:
                tgt = self.tensors.get(t["alias_of"])
                if tgt is None or "alias_of" in tgt:
                    raise E("Malformed", f"{name}: alias target")
                if tgt["dtype"] != t["dtype"] or tgt["shape"] != t["shape"]:
                    raise E("Malformed", f"{name}: alias dtype/shape")
        self.attachments = {}
        for a in atts:
            if not isinstance(a, dict):
                raise E("Malformed", "attachment entry")
            name = a.get("name")
            if not isinstance(name, str) or not name:
                raise E("Malformed", "attachment name")
            if not _valid_attachment_name(name):
                raise E("Malformed", f"attachment name {name!r}")
            if len(name.encode()) > 1024:
                raise E("Limit", "attachment name too long")
            if name in self.attachments:
                raise E("Malformed", "duplicate attachment")
            if not is_uint(a.get("size")):
                raise E("Malformed", "attachment size")
            if a.get("encoding") not in ("raw", "zstd"):
                raise E("Malformed", "attachment encoding")
            _check_blobmap(a.get("blob"), 1)
            if a["encoding"] == "raw" and a["blob"]["length"] != a["size"]:
                raise E("Malformed", "raw attachment length")
            self.attachments[name] = a
        _check_name_set(list(self.attachments))

    # ------------------------------------------------------------ step 6
    def _check_tiling(self, idx):
        A = self.A
        blobs = []
        for t in self.tensors.values():
            blobs.extend(t.get("blobs", []))
        for a in self.attachments.values():
            blobs.append(a["blob"])
        blobs.sort(key=lambda b: b["offset"])
        pos = self.data_start
        for b in blobs:
            if b["length"] < 1 or b["offset"] % A or b["offset"] != pos:
                raise E("Malformed", f"tiling at offset {b['offset']}")
            pos = align_up(b["offset"] + b["length"], A)
        de = idx["data_end"]
        if pos != de:
            raise E("Malformed", "data_end does not match tiling")
        if not (self.data_start <= de <= self.index_offset):
            raise E("Malformed", "data_end range")
        if "previous" in idx:
            po = idx["previous"]["index_offset"]
            if not (de <= po < self.index_offset):
                raise E("Malformed", "previous.index_offset range")
        elif de != self.index_offset:
            raise E("Malformed", "data_end != index_offset without previous")

    # ------------------------------------------------------------ API
    def tensor_names(self):
        return list(self.order)

    def attachment_names(self):
        return list(self.attachments)

    def read_blob(self, b):
        off, ln = b["offset"], b["length"]
        data = self.buf[off:off + ln]
        if h64(data) != b["checksum"]:
            raise E("Checksum", f"blob at {off}")
        end = off + ln
        if any(self.buf[end:align_up(end, self.A)]):
            raise E("Checksum", f"blob padding at {end}")
        return data

    def attachment(self, name):
        try:
            a = self.attachments[name]
            data = self.read_blob(a["blob"])
            if a["encoding"] == "raw":
                return bytes(data)
            if a["size"] > 2 ** 15 * len(data):
                raise E("Limit", "zstd attachment expansion")
            return zstd_plane(bytes(data), a["size"])
        except LlmcError as e:
            e.phase = "decode"
            raise

    def decode(self, name):
        try:
            return self._decode(name)
        except LlmcError as e:
            e.phase = "decode"
            raise

    def decode_rows(self, name, a, b):
        """Rows [a, b) of a tensor (§7 'Rows'); no digest check (§5.6)."""
        try:
            return self._decode(name, rows=(a, b))
        except LlmcError as e:
            e.phase = "decode"
            raise

    def _decode(self, name, rows=None):
        t = self.tensors[name]
        if "alias_of" in t:
            t = self.tensors[t["alias_of"]]
        dtype, shape = t["dtype"], list(t["shape"])
        itemsize = ITEMSIZE[dtype]
        nz = itemsize
        for d in shape:
            if d:
                nz *= d
                if nz > 2 ** 62:
                    raise E("Limit", "rule 9")
        pl = t["pipeline"]
        # ids then configs, per stage from 0 (§7)
        for i, cfg in enumerate(pl):
            if cfg["id"] not in CODECS:
                raise E("UnsupportedCodec", f"{name}: stage {i} id {cfg['id']!r}")
            CODECS[cfg["id"]][1](cfg)
        kinds = [CODECS[c["id"]][0] for c in pl]
        if any(k != "aa" for k in kinds[:-1]) or kinds[-1] != "ab":
            raise E("Decode", "invalid pipeline shape")
        specs = [(dtype, shape)]
        for cfg in pl[:-1]:
            d, s = specs[-1]
            if cfg["id"] in ("affine", "blockdct"):
                if d not in FLOATS:
                    raise E("Decode", f"{cfg['id']} on {d}")
                if cfg["id"] == "blockdct" and len(s) < 2:
                    raise E("Decode", "blockdct rank < 2")
                specs.append(("uint16", s))
            elif cfg["id"] == "diagscale":  # §7.9
                if d not in FLOATS or math.prod(s) == 0:
                    raise E("Decode", f"diagscale on {d}{s}")
                specs.append(("float32", s))
            else:
                specs.append((d, s))
        stage_blobs = [[b for b in t["blobs"] if b["stage"] == i] for i in range(len(pl))]
        numel = math.prod(shape) if shape else 1
        stored = sum(b["length"] for b in t["blobs"])
        # §8 rule 10 (exact / ggml expansion bound incl. aliases)
        k_alias = sum(1 for x in self.tensors.values() if x.get("alias_of") == t["name"])
        last = pl[-1]["id"]
        bound = None
        if last == "exact" and len(pl) == 1:
            bound = 2 ** 15
        elif last == "ggml" and all(c["id"] == "rowperm" for c in pl[:-1]):
            bound = 2 ** 15 * 32
        if bound is not None and (k_alias + 1) * numel * itemsize > bound * max(stored, 0) and numel * itemsize > 0:
            raise E("Limit", "rule 10 expansion bound")
        n = len(pl)
        if rows is not None:
            nrows = shape[0] if shape else 1
            a, b = rows
            if not (0 <= a <= b <= nrows):
                raise ValueError("row range out of bounds")
            # rows each stage needs of the next (input_rows), from stage 0 down
            need = [(a, b)]
            for i in range(n - 1):
                need.append(input_rows(pl[i], specs[i], need[-1]))
            arr = CODECS[pl[-1]["id"]][2](self, pl[-1], specs[-1], stage_blobs[-1], rows=need[-1])
            for i in range(n - 2, -1, -1):
                arr = CODECS[pl[i]["id"]][2](self, pl[i], specs[i], stage_blobs[i], arr,
                                             rows=need[i], in_rows=need[i + 1])
            arr = np.asarray(arr, order="C")
            want = list(_row_shape(shape, a, b))
            if arr.dtype != _np_dtype(dtype) or list(arr.shape) != want:
                raise E("Decode", f"row decode produced {arr.dtype}{arr.shape}, expected {want}")
            return arr
        arr = CODECS[pl[-1]["id"]][2](self, pl[-1], specs[-1], stage_blobs[-1])
        for i in range(n - 2, -1, -1):
            arr = CODECS[pl[i]["id"]][2](self, pl[i], specs[i], stage_blobs[i], arr)
        npd = _np_dtype(dtype)
        arr = np.asarray(arr, order="C")  # (np.ascontiguousarray turns 0-d into 1-d)
        if arr.dtype != npd or list(arr.shape) != shape:
            raise E("Decode", f"stage produced {arr.dtype}{arr.shape}, expected {dtype}{shape}")
        dec = t["digest"].get("decoded")
        if dec is not None and h64(arr.tobytes()) != dec:
            raise E("DigestMismatch", name)
        return arr


    def ggml_blocks(self, name, ggml_type):
        """§7.8: the blocks a tensor's final ggml stage stores (stored row order), all rows."""
        t = self.tensors[name]
        if "alias_of" in t:
            t = self.tensors[t["alias_of"]]
        pl = t["pipeline"]
        for i, cfg in enumerate(pl):
            if cfg["id"] not in CODECS:
                raise E("UnsupportedCodec", f"{name}: stage {i} id {cfg['id']!r}")
            CODECS[cfg["id"]][1](cfg)
        if pl[-1]["id"] != "ggml" or pl[-1]["type"] != ggml_type:
            raise E("Decode", f"{name} is not stored as ggml {ggml_type}: cannot rebuild the GGUF")
        if any(c["id"] != "rowperm" for c in pl[:-1]):  # only rowperm keeps the spec (§7)
            raise E("Decode", f"{name}: an array stage other than rowperm before ggml")
        spec = (t["dtype"], list(t["shape"]))
        blobs = [b for b in t["blobs"] if b["stage"] == len(pl) - 1]
        if math.prod(spec[1] or [1]) == 0:
            return b""
        return ggml_decode(self, pl[-1], spec, blobs, want_blocks=True).tobytes()

    def rebuild_gguf(self):
        """§7.8: the GGUF file (bytes) from '.llmc/gguf-layout.msgpack'."""
        try:
            raw = self.attachment(LAYOUT)
            rec = parse_layout(raw)
            import hashlib
            out = [rec["prefix"]]
            for ent in rec["tensors"]:
                data = ent.get("data", None)
                if data is None:
                    ref = ent["tensor"]
                    if ref not in self.tensors:
                        raise E("Decode", f"layout record names no tensor {ref!r}")
                    data = self.ggml_blocks(ref, ent["type"])
                    if len(data) != ent["size"]:
                        raise E("Decode", f"{ref}: {len(data)} block bytes, record says {ent['size']}")
                out.append(data)
                out.append(ent.get("gap", b""))
            out.append(rec["tail"])
            blob = b"".join(out)
            if hashlib.sha256(blob).hexdigest() != rec["sha256"]:
                raise E("DigestMismatch", "rebuilt GGUF SHA-256")
            return blob
        except LlmcError as e:
            e.phase = "decode"
            raise


LAYOUT = ".llmc/gguf-layout.msgpack"


def parse_layout(raw):
    """§7.8 'Encoding': §5 msgpack rules and the schema; every fault is Decode."""
    try:
        rec = strict_unpack(bytes(raw))
    except LlmcError as e:
        raise E("Decode", f"layout record: {e}")
    _need(isinstance(rec, dict), "layout record is not a map")
    _need(is_int(rec.get("version")) and rec["version"] == 1, "layout record version")
    _need(is_uint(rec.get("size")), "layout record size")
    sha = rec.get("sha256")
    _need(isinstance(sha, str) and len(sha) == 64 and all(c in "0123456789abcdef" for c in sha),
          "layout record sha256")
    _need(isinstance(rec.get("prefix"), bytes) and isinstance(rec.get("tail"), bytes),
          "layout record prefix/tail")
    _need(isinstance(rec.get("tensors"), list), "layout record tensors")
    total = len(rec["prefix"]) + len(rec["tail"])
    for ent in rec["tensors"]:
        _need(isinstance(ent, dict) and isinstance(ent.get("name"), str)
              and isinstance(ent.get("type"), str) and is_uint(ent.get("size")), "layout entry")
        _need(("tensor" in ent) != ("data" in ent), "layout entry: exactly one of tensor/data")
        _need(isinstance(ent.get("tensor", ""), str) and isinstance(ent.get("data", b""), bytes)
              and isinstance(ent.get("gap", b""), bytes), "layout entry types")
        if "data" in ent:
            _need(len(ent["data"]) == ent["size"], "layout entry data length")
        total += ent["size"] + len(ent.get("gap", b""))
    _need(total == rec["size"], "layout record parts do not add up")
    return rec


# ================================================================= codecs
def input_rows(cfg, spec, rng):
    a, b = rng
    if a == b:
        return (a, b)
    _dtype, shape = spec
    if cfg["id"] == "blockdct":
        B = cfg["block"]
        R = shape[0]
        Rp = B * (R // B)
        a2 = B * (a // B) if a < Rp else a
        b2 = B * (-(-b // B)) if b <= Rp else b
        return (a2, b2)
    if cfg["id"] == "rowperm":
        # §7.7 (contradicts §7 "identity for all but blockdct", see README)
        D2 = shape[0] // cfg["heads"]
        if D2 == 0:
            return (a, b)
        return ((a // D2) * D2, -(-b // D2) * D2)
    return (a, b)


def _row_shape(shape, a, b):
    if not shape:  # 0-d: §7 "Rows" (revision 1.2): a range has shape [b - a], also here
        return (b - a,)
    return tuple([b - a, *list(shape[1:])])

def _closed(cfg, required, optional=()):
    for k in required:
        if k not in cfg:
            raise E("Decode", f"{cfg['id']}: missing key {k}")
    for k in cfg:
        if k != "id" and k not in required and k not in optional:
            raise E("Decode", f"{cfg['id']}: unknown key {k}")


def _need(cond, msg):
    if not cond:
        raise E("Decode", msg)


# ---------------------------------------------------------------- zstd frame (§7.1)
def zstd_plane(payload: bytes, n: int) -> bytes:
    if len(payload) < 4 or payload[:4] != b"\x28\xb5\x2f\xfd":
        raise E("Decode", "not a zstd frame (or skippable frame)")
    try:
        fp = zstandard.get_frame_parameters(payload)
    except Exception as e:
        raise E("Decode", f"zstd header: {e}")
    if fp.content_size != n:
        raise E("Decode", f"zstd content size {fp.content_size} != {n}")
    if fp.dict_id != 0:
        raise E("Decode", "zstd dictionary")
    if fp.window_size > max(n, 2 ** 17):
        raise E("Decode", "zstd window too large")
    try:
        d = zstandard.ZstdDecompressor().decompressobj()
        out = d.decompress(payload)
        if not d.eof or d.unused_data:
            raise E("Decode", "zstd: not exactly one complete frame")
    except LlmcError:
        raise
    except Exception as e:
        raise E("Decode", f"zstd: {e}")
    if len(out) != n:
        raise E("Decode", "zstd decoded length")
    return out


# ---------------------------------------------------------------- exact (§7.1)
def exact_check(cfg):
    _closed(cfg, ("layout", "chunk_elems"), ("chunk_bytes",))
    _need(is_int(cfg["layout"]) and cfg["layout"] == 1, "exact: layout")
    _need(is_int(cfg["chunk_elems"]) and 0 <= cfg["chunk_elems"] <= 2 ** 30, "exact: chunk_elems")
    if "chunk_bytes" in cfg:
        _need(is_int(cfg["chunk_bytes"]) and 1 <= cfg["chunk_bytes"] <= 2 ** 30, "exact: chunk_bytes")


def exact_chunk(blob: bytes, n: int, k: int) -> np.ndarray:
    """Decode one exact blob of n elements of k bytes -> uint array of x_j."""
    w = 8 * k
    _need(len(blob) >= 1 + 5 * k, "exact: blob too short")
    r = blob[0]
    _need(r < w, "exact: rotation")
    modes, lens = [], []
    for i in range(k):
        modes.append(blob[1 + 5 * i])
        lens.append(struct.unpack_from("<I", blob, 2 + 5 * i)[0])
    _need(len(blob) == 1 + 5 * k + sum(lens), "exact: blob length")
    pos = 1 + 5 * k
    ut = UINT_BY_SIZE[k]
    s = np.zeros(n, dtype=np.uint64)
    for i in range(k):
        p = blob[pos:pos + lens[i]]
        pos += lens[i]
        if modes[i] == 0:
            _need(lens[i] == n, "exact: raw plane length")
            plane = p
        elif modes[i] == 1:
            plane = zstd_plane(bytes(p), n)
        else:
            raise E("Decode", "exact: plane mode")
        s |= np.frombuffer(plane, dtype=np.uint8).astype(np.uint64) << np.uint64(8 * i)
    if r:
        mask = np.uint64((1 << w) - 1) if w < 64 else np.uint64(0xFFFFFFFFFFFFFFFF)
        s = ((s >> np.uint64(r)) | (s << np.uint64(w - r))) & mask
    return s.astype(ut)


def exact_decode(rd, cfg, spec, blobs, rows=None):
    dtype, shape = spec
    N = math.prod(shape) if shape else 1
    C = cfg["chunk_elems"]
    _need((C == 0) == (N == 0), "exact: chunk_elems vs numel")
    k = ITEMSIZE[dtype]
    nblobs = 0 if N == 0 else -(-N // C)
    _need(len(blobs) == nblobs, "exact: blob count")
    if rows is not None:
        a, b = rows
        nrows = shape[0] if shape else 1
        W = N // nrows if nrows else 0
        e0, e1 = a * W, b * W
        if e0 == e1:
            return np.zeros(_row_shape(shape, a, b), _np_dtype(dtype))
        i0, i1 = e0 // C, (e1 - 1) // C
        parts = []
        for i in range(i0, i1 + 1):
            parts.append(exact_chunk(rd.read_blob(blobs[i]), min(C, N - i * C), k))
        flat = np.concatenate(parts)[e0 - i0 * C:e1 - i0 * C]
        if dtype == "bool":
            _need(bool(np.all(flat <= 1)), "exact: bool byte not 0/1")
        return flat.view(_np_dtype(dtype)).reshape(_row_shape(shape, a, b))
    parts = []
    for i, b in enumerate(blobs):
        data = rd.read_blob(b)
        n = min(C, N - i * C)
        parts.append(exact_chunk(data, n, k))
    flat = np.concatenate(parts) if parts else np.zeros(0, UINT_BY_SIZE[k])
    if dtype == "bool":
        _need(bool(np.all(flat <= 1)), "exact: bool byte not 0/1")
    return flat.view(_np_dtype(dtype)).reshape(tuple(shape))


# ---------------------------------------------------------------- affine (§7.2)
FMAX = {"float16": np.float32(65504.0),
        "bfloat16": np.float32((2 - 2 ** -7) * 2.0 ** 127),
        "float32": np.float32(np.finfo(np.float32).max),
        "float64": np.float32(np.finfo(np.float32).max)}


def affine_check(cfg):
    _closed(cfg, ("bits", "granularity", "group_size", "clip", "clip_bits", "param_dtype"))
    _need(is_int(cfg["bits"]) and 1 <= cfg["bits"] <= 16, "affine: bits")
    _need(cfg["granularity"] in ("row", "group", "tensor") and isinstance(cfg["granularity"], str), "affine: granularity")
    _need(is_int(cfg["group_size"]) and 1 <= cfg["group_size"] <= 2 ** 24, "affine: group_size")
    _need(isinstance(cfg["clip"], str) and cfg["clip"] in ("none", "mse"), "affine: clip")
    _need(is_number(cfg["clip_bits"]) and 1 <= cfg["clip_bits"] <= 16, "affine: clip_bits")
    _need(isinstance(cfg["param_dtype"], str) and cfg["param_dtype"] in ("float16", "bfloat16", "float32"), "affine: param_dtype")


def matrix_shape(shape):
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return 1, shape[0]
    return shape[0], math.prod(shape[1:])


def finish_float(u, dtype):
    m = FMAX[dtype]
    v = np.minimum(np.maximum(u, -m), m).astype(np.float32)
    return v.astype(_np_dtype(dtype))


def affine_decode(rd, cfg, spec, blobs, codes, rows=None, in_rows=None):
    dtype, shape = spec
    _need(dtype in FLOATS, "affine: dtype")
    _need(len(blobs) == 1, "affine: blob count")
    R, C = matrix_shape(shape)
    g = cfg["granularity"]
    gs = cfg["group_size"]
    P, G = {"row": (R, 1), "group": (R, -(-C // gs)), "tensor": (1, 1)}[g]
    pd = cfg["param_dtype"]
    b = 4 if pd == "float32" else 2
    data = rd.read_blob(blobs[0])
    _need(len(data) == 2 * P * G * b, "affine: parameter blob length")
    raw = np.frombuffer(data, dtype=_np_dtype(pd)).astype(np.float32)
    scale = raw[:P * G].reshape(P, G)
    off = raw[P * G:].reshape(P, G)
    _need(bool(np.all(np.isfinite(raw))), "affine: non-finite parameter")
    _need(not bool(np.any(scale < 0)), "affine: negative scale")
    if rows is not None:
        a, b = rows
        if len(shape) >= 2:
            if g != "tensor":
                scale, off = scale[a:b], off[a:b]
            R = b - a
            q = np.asarray(codes).reshape(R, C)
        elif len(shape) == 1:
            q = np.asarray(codes).reshape(1, b - a)
            colsel = np.arange(a, b)
        else:
            q = np.asarray(codes).reshape(1, 1)
        out_shape = _row_shape(shape, a, b)
    else:
        q = np.asarray(codes).reshape(R, C)
        out_shape = tuple(shape)
    _need(bool(np.all(q <= (1 << cfg["bits"]) - 1)), "affine: code too large")
    if rows is not None and len(shape) == 1:
        R, C = q.shape
        col = colsel // gs if g == "group" else np.zeros(C, np.int64)
        if g == "tensor" or g == "row":
            col = np.zeros(C, np.int64)
        S = scale[:, col]; O = off[:, col]
    elif g == "row":
        S = np.repeat(scale, C, axis=1); O = np.repeat(off, C, axis=1)
    elif g == "tensor":
        S = np.full((R, C), scale[0, 0], np.float32); O = np.full((R, C), off[0, 0], np.float32)
    else:
        col = np.arange(C) // gs
        S = scale[:, col]; O = off[:, col]
    with np.errstate(over="ignore"):
        t = (q.astype(np.float32) * S).astype(np.float32)
        u = (t + O).astype(np.float32)
    return finish_float(u, dtype).reshape(out_shape)


# ---------------------------------------------------------------- blockdct (§7.5)
def _is_f32_exact(x):
    return is_number(x) and math.isfinite(x) and float(np.float32(x)) == float(x)


def dct_matrix(B, p):
    M = np.zeros((B, B), dtype=np.int64)
    for k in range(B):
        ck = math.sqrt(0.5) if k == 0 else 1.0
        for n in range(B):
            v = (2 ** p) * ck * math.sqrt(2.0 / B) * math.cos(math.pi * (2 * n + 1) * k / (2 * B))
            M[k, n] = math.floor(abs(v) + 0.5) * (1 if v >= 0 else -1)
    return M


def blockdct_check(cfg):
    _closed(cfg, ("bits", "block", "precision", "scale", "offset"))
    _need(is_int(cfg["bits"]) and 1 <= cfg["bits"] <= 16, "blockdct: bits")
    _need(is_int(cfg["block"]) and cfg["block"] in (4, 8, 16, 32, 64), "blockdct: block")
    _need(is_int(cfg["precision"]) and 8 <= cfg["precision"] <= 16, "blockdct: precision")
    _need(_is_f32_exact(cfg["scale"]) and cfg["scale"] > 0, "blockdct: scale")
    _need(_is_f32_exact(cfg["offset"]), "blockdct: offset")
    B, p = cfg["block"], cfg["precision"]
    m = int(np.abs(dct_matrix(B, p)).max())
    h = 2 ** (cfg["bits"] - 1)
    _need(B * B * h * m * m < 2 ** 53, "blockdct: exactness bound")


def blockdct_decode(rd, cfg, spec, blobs, codes, rows=None, in_rows=None):
    dtype, shape = spec
    _need(dtype in FLOATS and len(shape) >= 2, "blockdct: dtype/rank")
    _need(len(blobs) == 0, "blockdct: owns a blob")
    B, p = cfg["block"], cfg["precision"]
    h = 2 ** (cfg["bits"] - 1)
    R, C = matrix_shape(shape)
    Rfull = R
    if rows is not None:
        a2, b2 = in_rows
        R = b2 - a2
    else:
        a2 = 0
    q = np.asarray(codes).reshape(R, C).astype(np.int64)
    _need(bool(np.all(q < 2 ** cfg["bits"])), "blockdct: code too large")
    c = q - h
    S = np.float32(cfg["scale"]); O = np.float32(cfg["offset"])
    u = (c.astype(np.float32) * S).astype(np.float32)
    u = (u + O).astype(np.float32)
    # core rows of this slice: global rows [a2, min(b2, R')) ; a2 is B-aligned when < R'
    Rp = max(0, min(a2 + R, B * (Rfull // B)) - a2)
    Cp = B * (C // B)
    if Rp and Cp:
        M = dct_matrix(B, p).astype(np.float64)
        X = c[:Rp, :Cp].astype(np.float64).reshape(Rp // B, B, Cp // B, B).transpose(0, 2, 1, 3)
        Z = M @ X @ M.T
        Z = Z.transpose(0, 2, 1, 3).reshape(Rp, Cp)
        T = np.float32(S * np.float32(2.0 ** (-2 * p)))
        core = (Z.astype(np.float32) * T).astype(np.float32)
        core = (core + O).astype(np.float32)
        u[:Rp, :Cp] = core
    if rows is not None:
        a, b = rows
        u = u[a - a2:b - a2]
        return finish_float(u, dtype).reshape(_row_shape(shape, a, b))
    return finish_float(u, dtype).reshape(tuple(shape))


# ---------------------------------------------------------------- video (§7.3)
VIDEO_LIMITS = {"vvc": 10, "hevc": 12, "ffv1": 16}
PIXFMT_DEPTH = {"yuv420p10le": 10, "gray10le": 10, "gray12le": 12, "gray": 8, "gray16le": 16}
PRESETS = {
    "vvc": ("faster", "fast", "medium", "slow", "slower"),
    "hevc": ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow",
             "slower", "veryslow", "placebo"),
}
ENCODERS = {"vvc": ("libvvenc",), "hevc": ("libx265",), "av1": ("libsvtav1", "libaom-av1"), "ffv1": ("ffv1",)}


def _allowed_pixfmt(cid, enc):
    if cid == "vvc":
        return ("yuv420p10le",)
    if cid == "hevc":
        return ("gray10le", "gray12le")
    if cid == "av1":
        return ("yuv420p10le",) if enc == "libsvtav1" else ("gray10le", "gray12le")
    return ("gray10le", "gray12le", "gray", "gray16le")


def video_check(cfg):
    cid = cfg["id"]
    req = ["bits", "encoder", "max_width", "max_height", "target_pixels", "frames", "pix_fmt", "frame_hashes"]
    opt = ["encoder_version", "ffmpeg_version"]
    if cid != "ffv1":
        req += ["qp", "preset"]
    if cid == "vvc":
        opt.append("vvenc_params")
    _closed(cfg, req, opt)
    enc = cfg["encoder"]
    _need(isinstance(enc, str) and enc in ENCODERS[cid], f"{cid}: encoder")
    maxbits = VIDEO_LIMITS.get(cid) or (10 if enc == "libsvtav1" else 12)
    _need(is_int(cfg["bits"]) and 1 <= cfg["bits"] <= maxbits, f"{cid}: bits")
    if cid != "ffv1":
        qr = {"vvc": (0, 63), "hevc": (0, 51), "av1": (1, 63)}[cid]
        _need(is_int(cfg["qp"]) and qr[0] <= cfg["qp"] <= qr[1], f"{cid}: qp")
        pr = cfg["preset"]
        if cid == "av1":
            _need(is_int(pr) and 0 <= pr <= (13 if enc == "libsvtav1" else 8), "av1: preset")
        else:
            _need(isinstance(pr, str) and pr in PRESETS[cid], f"{cid}: preset")
    if "vvenc_params" in cfg:
        _need(isinstance(cfg["vvenc_params"], str), "vvenc_params")
    for k in opt:
        if k in cfg:
            _need(isinstance(cfg[k], str), f"{cid}: {k}")
    pf = cfg["pix_fmt"]
    _need(isinstance(pf, str) and pf in _allowed_pixfmt(cid, enc), f"{cid}: pix_fmt")
    _need(PIXFMT_DEPTH[pf] >= cfg["bits"], f"{cid}: depth < bits")
    fr = cfg["frames"]
    _need(isinstance(fr, dict) and set(fr) == {"rows", "cols", "tile_rows", "tile_cols", "align", "min_size"},
          f"{cid}: frames keys")
    for v in fr.values():
        _need(is_int(v) and 1 <= v <= 2 ** 62, f"{cid}: frames value")
    al = fr["align"]
    _need((al, fr["min_size"]) == ((1, 2) if cid == "ffv1" else (8, 16)), f"{cid}: align/min_size")
    _need(fr["tile_rows"] % al == 0 and fr["tile_cols"] % al == 0, f"{cid}: tile multiple of align")
    _need(fr["tile_rows"] <= 16384 and fr["tile_cols"] <= 16384 and fr["min_size"] <= 16384, f"{cid}: tile size")
    for k in ("max_width", "max_height"):
        _need(is_int(cfg[k]) and cfg[k] % al == 0 and al <= cfg[k] <= 16384, f"{cid}: {k}")
    _need(is_int(cfg["target_pixels"]) and 1 <= cfg["target_pixels"] <= 2 ** 28, f"{cid}: target_pixels")
    fh = cfg["frame_hashes"]
    _need(isinstance(fh, list) and all(isinstance(x, str) and len(x) == 16 and all(ch in "0123456789abcdef" for ch in x)
                                       for x in fh), f"{cid}: frame_hashes")


AV_FORMAT = {"vvc": "vvc", "hevc": "hevc", "av1": "obu", "ffv1": "nut"}


def _decode_frame(cid, blob, W, H, pix_fmt):
    import av
    try:
        fmt = AV_FORMAT[cid]
        opts = {}
        cont = av.open(io.BytesIO(bytes(blob)), format=fmt, options=opts)
        vs = cont.streams.video[0]
        # Single-threaded decoding: with PyAV's default threading, FFmpeg's native vvc
        # decoder (libavcodec 62.28) returned wrong luma samples for ~50% of decodes of
        # v1-tiling's tiled.affine frame 7 on this machine (caught by the frame hash).
        vs.codec_context.thread_count = 1
        frames = []
        for pkt in cont.demux(vs):
            for fr in pkt.decode():
                frames.append(fr)
        cont.close()
    except Exception as e:
        raise E("Decode", f"{cid}: decoder failed: {e!r}")
    _need(len(frames) == 1, f"{cid}: {len(frames)} pictures")
    fr = frames[0]
    _need(fr.width == W and fr.height == H, f"{cid}: picture {fr.width}x{fr.height} != {W}x{H}")
    # §7.3 (rev 1.4): compare chroma format and bit depth, not the decoder's format name
    depth = PIXFMT_DEPTH[pix_fmt]
    comps = fr.format.components
    _need(not fr.format.has_palette and not any(c.is_alpha for c in comps), f"{cid}: alpha/palette")
    _need(all(c.bits == depth for c in comps), f"{cid}: bit depth {[c.bits for c in comps]} != {depth}")
    _need(comps and comps[0].is_luma and (comps[0].width, comps[0].height) == (W, H), f"{cid}: luma plane")
    if pix_fmt.startswith("gray"):
        _need(len(comps) == 1, f"{cid}: picture is not 4:0:0 ({fr.format.name})")
    else:  # 4:2:0
        _need(len(comps) == 3 and all(c.is_chroma and (c.width, c.height) == (-(-W // 2), -(-H // 2))
                                      for c in comps[1:]), f"{cid}: picture is not 4:2:0 ({fr.format.name})")
    name = fr.format.name
    pl = fr.planes[0]
    if depth == 8:
        a = np.frombuffer(memoryview(pl), dtype=np.uint8).reshape(H, pl.line_size)[:, :W].astype("<u2")
    else:
        dt = ">u2" if name.endswith("be") else "<u2"
        a = np.frombuffer(memoryview(pl), dtype=dt).reshape(H, pl.line_size // 2)[:, :W].astype("<u2")
        if name.startswith(("p0", "p2", "p4")):  # MSB-aligned semi-planar: same samples, shifted
            a = a >> (16 - depth)
    return np.ascontiguousarray(a, dtype="<u2")


def video_decode(rd, cfg, spec, blobs, rows=None):
    rng = rows
    cid = cfg["id"]
    dtype, shape = spec
    _need(dtype == "uint16", f"{cid}: input spec not uint16")
    _need(len(shape) >= 1 and math.prod(shape) > 0, f"{cid}: 0-d or empty tensor")
    rows, cols = (1, shape[0]) if len(shape) == 1 else (shape[0], math.prod(shape[1:]))
    fr = cfg["frames"]
    _need((fr["rows"], fr["cols"]) == (rows, cols), f"{cid}: frames rows/cols")
    tr, tc, al, ms = fr["tile_rows"], fr["tile_cols"], fr["align"], fr["min_size"]
    nb, nc = -(-rows // tr), -(-cols // tc)
    nf = nb * nc
    _need(len(blobs) == nf, f"{cid}: blob count")
    _need(len(cfg["frame_hashes"]) == nf, f"{cid}: frame_hashes count")
    bits = cfg["bits"]
    depth = PIXFMT_DEPTH[cfg["pix_fmt"]]
    out = np.zeros((rows, cols), dtype="<u2")
    if rng is not None:
        a, b = rng
        if a == b:
            return np.zeros(_row_shape(shape, a, b), "<u2")
        br0, br1, bc0, bc1 = (a, b, 0, cols) if len(shape) >= 2 else (0, 1, a, b)
        wanted = {bi * nc + bj for bi in range(br0 // tr, (br1 - 1) // tr + 1)
                  for bj in range(bc0 // tc, (bc1 - 1) // tc + 1)}
    else:
        wanted = None
    for k in range(nf):
        if wanted is not None and k not in wanted:
            continue
        i, j = divmod(k, nc)
        r0, r1 = i * tr, min((i + 1) * tr, rows)
        c0, c1 = j * tc, min((j + 1) * tc, cols)
        H = max(ms, align_up(r1 - r0, al))
        W = max(ms, align_up(c1 - c0, al))
        data = rd.read_blob(blobs[k])
        Y = _decode_frame(cid, data, W, H, cfg["pix_fmt"])
        _need(f"{h64(Y.tobytes()):016x}" == cfg["frame_hashes"][k], f"{cid}: frame {k} hash mismatch")
        Yt = Y[:r1 - r0, :c1 - c0].astype(np.int64)
        if cid == "ffv1":
            _need(bool(np.all((1 << bits) > Y)), "ffv1: sample >= 2^bits")
            v = Yt
        else:
            shift = depth - bits
            half = (1 << shift) >> 1
            v = np.minimum((Yt + half) >> shift, (1 << bits) - 1)
        out[r0:r1, c0:c1] = v
    if rng is not None:
        return out[br0:br1, bc0:bc1].reshape(_row_shape(shape, a, b))
    return out.reshape(tuple(shape))


# ---------------------------------------------------------------- rowperm (§7.7)
def rowperm_check(cfg):
    _closed(cfg, ("heads",))
    _need(is_int(cfg["heads"]) and cfg["heads"] >= 1, "rowperm: heads")


def rowperm_decode(rd, cfg, spec, blobs, arr, rows=None, in_rows=None):
    _dtype, shape = spec
    _need(len(blobs) == 0, "rowperm: owns blobs")
    _need(len(shape) >= 1, "rowperm: rank 0")
    N = shape[0]
    Hh = cfg["heads"]
    _need(N % (2 * Hh) == 0 and N // (2 * Hh) >= 1, "rowperm: rows not H*2*D")
    D = N // (2 * Hh)
    out = np.empty_like(arr)
    base = in_rows[0] if rows is not None else 0  # multiple of 2D
    for hh in range(arr.shape[0] // (2 * D)):
        for i in range(2):
            for j in range(D):
                out[hh * 2 * D + i * D + j] = arr[hh * 2 * D + 2 * j + i]
    if rows is not None:
        a, b = rows
        return out[a - base:b - base]
    return out


# ---------------------------------------------------------------- diagscale (§7.9)
def diagscale_check(cfg):
    _closed(cfg, ("cols", "rows"))
    _need(isinstance(cfg["cols"], bool) and isinstance(cfg["rows"], bool), "diagscale: cols/rows not bool")
    _need(cfg["cols"] or cfg["rows"], "diagscale: both false")


def _half_vector(data, n):
    _need(len(data) == 2 * n, f"diagscale: vector of {len(data)} bytes, expected {2 * n}")
    bits = np.frombuffer(bytes(data), "<u2")
    expo = (bits >> 10) & 31
    _need(bool(np.all((bits >> 15) == 0) and np.all((expo >= 1) & (expo <= 30))),
          "diagscale: entry not finite, positive and normal")
    return bits.view("<f2").astype(np.float32)


def diagscale_decode(rd, cfg, spec, blobs, y, rows=None, in_rows=None):
    dtype, shape = spec
    _need(dtype in FLOATS and (math.prod(shape) if shape else 1) >= 1, "diagscale: spec")
    nb = int(cfg["cols"]) + int(cfg["rows"])
    _need(len(blobs) == nb, "diagscale: blob count")
    R = shape[0] if shape else 1
    C = (math.prod(shape) // R) if shape else 1  # 1-D: C = 1 (rows are elements)
    k = 0
    cvec = rvec = None
    if cfg["cols"]:
        cvec = _half_vector(rd.read_blob(blobs[0]), C)
        k = 1
    if cfg["rows"]:
        rvec = _half_vector(rd.read_blob(blobs[k]), R)
    y = np.asarray(y)
    _need(y.dtype == np.float32, "diagscale: next stage did not give float32")
    _need(not np.isnan(y).any(), "diagscale: NaN from the next stage")
    a, b = rows if rows is not None else (0, R)
    m = y.reshape(b - a, C) if (b - a) else y.reshape(0, C)
    with np.errstate(over="ignore"):
        t = (m * cvec[None, :]).astype(np.float32) if cvec is not None else m
        u = (t * rvec[a:b, None]).astype(np.float32) if rvec is not None else t
    out = finish_float(u, dtype)
    oshape = _row_shape(shape, a, b) if rows is not None else tuple(shape)
    return out.reshape(oshape)


# ---------------------------------------------------------------- ggml (§7.6)
GGML = {  # name: (bs, ts, decoded dtype)
    "F32": (1, 4, "float32"), "F16": (1, 2, "float16"), "BF16": (1, 2, "bfloat16"),
    "F64": (1, 8, "float64"), "I8": (1, 1, "int8"), "I16": (1, 2, "int16"),
    "I32": (1, 4, "int32"), "I64": (1, 8, "int64"),
    "Q4_0": (32, 18, "float32"), "Q4_1": (32, 20, "float32"), "Q5_0": (32, 22, "float32"),
    "Q5_1": (32, 24, "float32"), "Q8_0": (32, 34, "float32"), "Q2_K": (256, 84, "float32"),
    "Q3_K": (256, 110, "float32"), "Q4_K": (256, 144, "float32"), "Q5_K": (256, 176, "float32"),
    "Q6_K": (256, 210, "float32"), "Q8_K": (256, 292, "float32"), "IQ4_NL": (32, 18, "float32"),
    "IQ4_XS": (256, 136, "float32"), "TQ1_0": (256, 54, "float32"), "TQ2_0": (256, 66, "float32"),
    "MXFP4": (32, 17, "float32"), "NVFP4": (64, 36, "float32"),
    "IQ2_XXS": (256, 66, "float32"), "IQ2_XS": (256, 74, "float32"), "IQ3_XXS": (256, 98, "float32"),
    "IQ1_S": (256, 50, "float32"), "IQ3_S": (256, 110, "float32"), "IQ2_S": (256, 82, "float32"),
    "IQ1_M": (256, 56, "float32"),
}
KNL = np.array([-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113], np.float32)


def ggml_check(cfg):
    _closed(cfg, ("layout", "type", "fields", "rows_per_blob"), ("chunk_bytes",))
    _need(is_int(cfg["layout"]) and cfg["layout"] == 1, "ggml: layout")
    _need(isinstance(cfg["type"], str) and cfg["type"] in GGML, "ggml: type")
    f = cfg["fields"]
    _need(isinstance(f, list) and len(f) > 0, "ggml: fields")
    tot = 0
    for p in f:
        _need(isinstance(p, list) and len(p) == 2 and is_int(p[0]) and is_int(p[1]) and p[1] in (1, 2, 4, 8)
              and p[0] > 0 and p[0] % p[1] == 0, "ggml: field pair")
        tot += p[0]
    _need(tot == GGML[cfg["type"]][1], "ggml: fields sum")
    _need(is_int(cfg["rows_per_blob"]) and cfg["rows_per_blob"] >= 0, "ggml: rows_per_blob")
    if "chunk_bytes" in cfg:
        _need(is_int(cfg["chunk_bytes"]), "ggml: chunk_bytes")


def _f16(blk, off):
    return blk[:, off:off + 2].copy().view("<f2").astype(np.float32)[:, 0]


def _lo(x):
    return (x & 15).astype(np.int32)


def _hi(x):
    return (x >> 4).astype(np.int32)


def ggml_values(typ, blk):
    """blk: uint8 [nblocks, ts] -> float32 [nblocks, bs]."""
    f32 = np.float32
    nbk = blk.shape[0]
    if typ in ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "IQ4_NL"):
        qoff = {"Q4_0": 2, "Q4_1": 4, "Q5_0": 6, "Q5_1": 8, "IQ4_NL": 2}[typ]
        qs = blk[:, qoff:qoff + 16]
        nib = np.concatenate([_lo(qs), _hi(qs)], axis=1)
        d = _f16(blk, 0)[:, None]
        if typ == "Q4_0":
            return (d * (nib - 8).astype(f32)).astype(f32)
        if typ == "Q4_1":
            m = _f16(blk, 2)[:, None]
            return ((d * nib.astype(f32)).astype(f32) + m).astype(f32)
        if typ == "IQ4_NL":
            return (d * KNL[nib]).astype(f32)
        qhoff = 2 if typ == "Q5_0" else 4
        qh = blk[:, qhoff:qhoff + 4].copy().view("<u4")[:, 0].astype(np.int64)
        bitsv = ((qh[:, None] >> np.arange(32)[None, :]) & 1).astype(np.int32)
        q = nib | (bitsv << 4)
        if typ == "Q5_0":
            return (d * (q - 16).astype(f32)).astype(f32)
        m = _f16(blk, 2)[:, None]
        return ((d * q.astype(f32)).astype(f32) + m).astype(f32)
    if typ == "Q8_0":
        d = _f16(blk, 0)[:, None]
        return (blk[:, 2:34].view(np.int8).astype(f32) * d).astype(f32)
    if typ == "Q8_K":
        d = blk[:, 0:4].copy().view("<f4")[:, 0][:, None]
        return (blk[:, 4:260].view(np.int8).astype(f32) * d).astype(f32)
    if typ in ("Q4_K", "Q5_K"):
        d = _f16(blk, 0)[:, None]
        dmin = _f16(blk, 2)[:, None]
        sc = blk[:, 4:16].astype(np.int32)
        scs = np.zeros((nbk, 8), np.int32); ms = np.zeros((nbk, 8), np.int32)
        for s in range(8):
            if s < 4:
                scs[:, s] = sc[:, s] & 63; ms[:, s] = sc[:, s + 4] & 63
            else:
                scs[:, s] = (sc[:, s + 4] & 15) | ((sc[:, s - 4] >> 6) << 4)
                ms[:, s] = (sc[:, s + 4] >> 4) | ((sc[:, s] >> 6) << 4)
        qoff = 16 if typ == "Q4_K" else 48
        qs = blk[:, qoff:qoff + 128].astype(np.int32)
        out = np.zeros((nbk, 256), f32)
        for h in range(4):
            for k in range(2):
                s = 2 * h + k
                byte = qs[:, 32 * h:32 * h + 32]
                q = (byte & 15) if k == 0 else (byte >> 4)
                if typ == "Q5_K":
                    qh = blk[:, 16:48].astype(np.int32)
                    q = q + (((qh >> s) & 1) << 4)
                a = (d * scs[:, s:s + 1].astype(f32)).astype(f32)
                b = (dmin * ms[:, s:s + 1].astype(f32)).astype(f32)
                out[:, 64 * h + 32 * k:64 * h + 32 * k + 32] = ((a * q.astype(f32)).astype(f32) - b).astype(f32)
        return out
    if typ == "Q6_K":
        ql = blk[:, 0:128].astype(np.int32)
        qh = blk[:, 128:192].astype(np.int32)
        scales = blk[:, 192:208].view(np.int8).astype(f32)
        d = _f16(blk, 208)[:, None]
        out = np.zeros((nbk, 256), f32)
        for h in range(2):
            for k in range(4):
                src = ql[:, 64 * h + 32 * (k % 2):64 * h + 32 * (k % 2) + 32]
                low = (src & 15) if k < 2 else (src >> 4)
                high = (qh[:, 32 * h:32 * h + 32] >> (2 * k)) & 3
                q = (low | (high << 4)) - 32
                e0 = 128 * h + 32 * k
                for half in range(2):
                    s = (e0 + 16 * half) // 16
                    a = (d[:, 0] * scales[:, s]).astype(f32)[:, None]
                    out[:, e0 + 16 * half:e0 + 16 * half + 16] = (a * q[:, 16 * half:16 * half + 16].astype(f32)).astype(f32)
        return out
    if typ == "IQ4_XS":
        d = _f16(blk, 0)
        sh = blk[:, 2:4].copy().view("<u2")[:, 0].astype(np.int32)
        sl = blk[:, 4:8].astype(np.int32)
        qs = blk[:, 8:136].astype(np.int32)
        out = np.zeros((nbk, 256), f32)
        for s in range(8):
            ls = ((sl[:, s // 2] >> (4 * (s % 2))) & 15) | (((sh >> (2 * s)) & 3) << 4)
            a = (d * (ls - 32).astype(f32)).astype(f32)[:, None]
            seg = qs[:, 16 * s:16 * s + 16]
            nib = np.concatenate([seg & 15, seg >> 4], axis=1)
            out[:, 32 * s:32 * s + 32] = (a * KNL[nib]).astype(f32)
        return out
    if typ == "Q2_K":  # §7.6: e = 128h + 32k + l, q = (qs[32h + l] >> 2k) & 3, s = e div 16
        sc = blk[:, 0:16].astype(np.int32)
        qs = blk[:, 16:80].astype(np.int32)
        d, dmin = _f16(blk, 80)[:, None], _f16(blk, 82)[:, None]
        out = np.zeros((nbk, 256), f32)
        for e0 in range(0, 256, 16):
            s = e0 // 16
            a = (d * _lo(sc[:, s:s + 1]).astype(f32)).astype(f32)
            b = (dmin * _hi(sc[:, s:s + 1]).astype(f32)).astype(f32)
            e = np.arange(e0, e0 + 16)
            h, k, ll = e // 128, (e % 128) // 32, e % 32
            q = (qs[:, 32 * h + ll] >> (2 * k)) & 3
            out[:, e0:e0 + 16] = ((a * q.astype(f32)).astype(f32) - b).astype(f32)
        return out
    if typ == "Q3_K":  # §7.6: low 2 bits, high bit from hmask, 6-bit scales
        hm = blk[:, 0:32].astype(np.int32)
        qs = blk[:, 32:96].astype(np.int32)
        sc = blk[:, 96:108].astype(np.int32)
        d = _f16(blk, 108)[:, None]
        out = np.zeros((nbk, 256), f32)
        for e0 in range(0, 256, 16):
            s = e0 // 16
            low4 = _lo(sc[:, s]) if s < 8 else _hi(sc[:, s - 8])
            scs = low4 | (((sc[:, 8 + s % 4] >> (2 * (s // 4))) & 3) << 4)
            a = (d[:, 0] * (scs - 32).astype(f32)).astype(f32)[:, None]
            e = np.arange(e0, e0 + 16)
            h, k, ll = e // 128, (e % 128) // 32, e % 32
            low = (qs[:, 32 * h + ll] >> (2 * k)) & 3
            high = (hm[:, ll] >> (4 * h + k)) & 1
            q = low - 4 * (1 - high)
            out[:, e0:e0 + 16] = (a * q.astype(f32)).astype(f32)
        return out
    if typ == "TQ1_0":
        qs = blk[:, 0:48].astype(np.int64)
        qh = blk[:, 48:52].astype(np.int64)
        d = _f16(blk, 52)[:, None]
        digits = np.zeros((nbk, 256), np.int64)
        for i in range(5):
            for j in range(32):
                digits[:, 32 * i + j] = (((qs[:, j] * 3 ** i) % 256) * 3) >> 8
            for j in range(16):
                digits[:, 160 + 16 * i + j] = (((qs[:, 32 + j] * 3 ** i) % 256) * 3) >> 8
        for i in range(4):
            for j in range(4):
                digits[:, 240 + 4 * i + j] = (((qh[:, j] * 3 ** i) % 256) * 3) >> 8
        return (d * (digits - 1).astype(f32)).astype(f32)
    if typ == "TQ2_0":
        qs = blk[:, 0:64].astype(np.int32)
        d = _f16(blk, 64)[:, None]
        e = np.arange(256)
        h, k, ll = e // 128, (e % 128) // 32, e % 32
        q = (qs[:, 32 * h + ll] >> (2 * k)) & 3
        return (d * (q - 1).astype(f32)).astype(f32)
    if typ == "MXFP4":
        ev = blk[:, 0].astype(np.uint32)
        bits = np.where(ev < 2, np.uint32(0x00200000) << ev, (ev - 1) << np.uint32(23)).astype(np.uint32)
        scale = bits.view(np.float32)[:, None]
        qs = blk[:, 1:17]
        nib = np.concatenate([_lo(qs), _hi(qs)], axis=1)
        return (scale * FP4[nib]).astype(f32)
    if typ == "NVFP4":
        sb = blk[:, 0:4].astype(np.int32)
        ex, man = (sb >> 3) & 15, (sb & 7).astype(f32)
        val = np.where(ex == 0, man * f32(2.0 ** -9),
                       (f32(1) + man / f32(8)) * np.exp2((ex - 7).astype(f32)))
        scale = np.where((sb == 0) | (sb == 0x7F), f32(0), (val * f32(0.5)).astype(f32)).astype(f32)
        qs = blk[:, 4:36]
        out = np.zeros((nbk, 64), f32)
        for g in range(4):
            seg = qs[:, 8 * g:8 * g + 8]
            nib = np.concatenate([_lo(seg), _hi(seg)], axis=1)
            out[:, 16 * g:16 * g + 16] = (scale[:, g:g + 1] * FP4[nib]).astype(f32)
        return out
    if typ in IQ_TYPES:
        return iq_values(typ, blk)
    raise E("Decode", f"ggml: value decoding of {typ} not implemented in this clean-room reader")


FP4 = np.array([0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12], np.float32)
IQ_TYPES = ("IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS", "IQ3_S", "IQ1_S", "IQ1_M")
_GRIDS = {}


def grids():
    """The six tables of spec/ggml-grids.txt, by the rules in its header (§7.6)."""
    if _GRIDS:
        return _GRIDS
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "spec", "ggml-grids.txt")
    with open(path, "rb") as f:
        text = f.read()
    import hashlib
    if hashlib.sha256(text).hexdigest() != "685ec2f81d6056517372fabb89be58e24f74b54a2458694630bcce2d739a274f":
        raise E("Decode", "spec/ggml-grids.txt does not have the SHA-256 §7.6 pins")
    cur = None
    for line in text.decode().splitlines():
        if not line or line.startswith("#"):
            continue
        if line.startswith("table "):
            _, name, n, k = line.split()
            cur = (name, int(n), int(k), [])
            _GRIDS[name] = cur
        else:
            cur[3].append(int(line, 16))
    for name, (_, n, k, ents) in list(_GRIDS.items()):
        a = np.array([[(v >> (8 * j)) & 0xFF for j in range(k)] for v in ents], np.int64)
        assert a.shape == (n, k)
        if name == "iq1s_grid":
            a = np.where(a >= 128, a - 256, a)
        _GRIDS[name] = a.astype(np.float32)
    return _GRIDS


def _ks(x):
    x = np.asarray(x, np.int64)
    pop = np.zeros_like(x)
    for b in range(7):
        pop += (x >> b) & 1
    return x + 128 * (pop % 2)


def _sgn(v, t):
    return np.where(((np.asarray(v, np.int64) >> t) & 1) == 1, np.float32(-1), np.float32(1))


def iq_values(typ, blk):
    """§7.6 codebook types: e = 32 gr + 8 l + t; values exact in binary32."""
    f32 = np.float32
    G = grids()
    nbk = blk.shape[0]
    b = blk.astype(np.int64)

    def u16(off):
        return b[:, off] | (b[:, off + 1] << 8)

    def u32(off):
        return u16(off) | (u16(off + 2) << 16)

    out = np.zeros((nbk, 256), f32)
    d = _f16(blk, 0) if typ != "IQ1_M" else None
    if typ == "IQ1_M":
        sc = [u16(48 + 2 * i) for i in range(4)]
        dbits = (sc[0] >> 12) | ((sc[1] >> 8) & 0xF0) | ((sc[2] >> 4) & 0xF00) | (sc[3] & 0xF000)
        d = dbits.astype(np.uint16).view(np.float16).astype(f32)
    for gr in range(8):
        for ll in range(4):
            for t in range(8):
                e = 32 * gr + 8 * ll + t
                if typ == "IQ2_XXS":
                    w = u32(2 + 8 * gr + 4)
                    db = ((d * (f32(0.5) + (w >> 28).astype(f32))).astype(f32) * f32(0.25)).astype(f32)
                    g = G["iq2xxs_grid"][b[:, 2 + 8 * gr + ll], t]
                    v = (db * g).astype(f32) * _sgn(_ks((w >> (7 * ll)) & 127), t)
                elif typ in ("IQ2_XS", "IQ2_S"):
                    sbyte = b[:, (66 if typ == "IQ2_XS" else 74) + gr]  # scales[gr]
                    s = (sbyte & 15) if ll < 2 else (sbyte >> 4)
                    db = ((d * (f32(0.5) + s.astype(f32))).astype(f32) * f32(0.25)).astype(f32)
                    if typ == "IQ2_XS":
                        vv = u16(2 + 2 * (4 * gr + ll))
                        g = G["iq2xs_grid"][vv & 511, t]
                        sg = _sgn(_ks(vv >> 9), t)
                    else:
                        m = 4 * gr + ll
                        idx = b[:, 2 + m] | (((b[:, 66 + gr] >> (2 * ll)) & 3) << 8)
                        g = G["iq2s_grid"][idx, t]
                        sg = _sgn(b[:, 34 + m], t)
                    v = (db * g).astype(f32) * sg
                elif typ == "IQ3_XXS":
                    w = u32(66 + 4 * gr)
                    db = ((d * (f32(0.5) + (w >> 28).astype(f32))).astype(f32) * f32(0.5)).astype(f32)
                    idx = b[:, 2 + 8 * gr + 2 * ll + t // 4]
                    g = G["iq3xxs_grid"][idx, t % 4]
                    v = (db * g).astype(f32) * _sgn(_ks((w >> (7 * ll)) & 127), t)
                elif typ == "IQ3_S":
                    m = e // 4
                    idx = b[:, 2 + m] | (((b[:, 66 + m // 8] >> (m % 8)) & 1) << 8)
                    sbyte = b[:, 106 + gr // 2]
                    s = (sbyte & 15) if gr % 2 == 0 else (sbyte >> 4)
                    db = (d * (1 + 2 * s).astype(f32)).astype(f32)
                    g = G["iq3s_grid"][idx, e % 4]
                    v = (db * g).astype(f32) * _sgn(b[:, 74 + e // 8], e % 8)
                elif typ == "IQ1_S":
                    h = u16(34 + 2 * gr)
                    dl = (d * (2 * ((h >> 12) & 7) + 1).astype(f32)).astype(f32)
                    delta = np.where(((h >> 15) & 1) == 1, f32(-0.125), f32(0.125))
                    idx = b[:, 2 + 4 * gr + ll] | (((h >> (3 * ll)) & 7) << 8)
                    v = dl * (G["iq1s_grid"][idx, t] + delta).astype(f32)
                else:  # IQ1_M
                    s = (sc[gr // 2] >> (6 * (gr % 2) + 3 * (ll // 2))) & 7
                    dl = (d * (2 * s + 1).astype(f32)).astype(f32)
                    m = 4 * gr + ll
                    n = (b[:, 32 + m // 2] >> (4 * (m % 2))) & 15
                    idx = b[:, m] | ((n & 7) << 8)
                    delta = np.where((n & 8) != 0, f32(-0.125), f32(0.125))
                    v = dl * (G["iq1s_grid"][idx, t] + delta).astype(f32)
                out[:, e] = np.asarray(v, f32)
    return out


def ggml_decode(rd, cfg, spec, blobs, rows=None, want_blocks=False):
    rng = rows
    dtype, shape = spec
    typ = cfg["type"]
    bs, ts, ddt = GGML[typ]
    _need(dtype == ddt, "ggml: dtype")
    rows = shape[0] if shape else 1
    numel = math.prod(shape) if shape else 1
    if shape:
        _need(shape[-1] % bs == 0, "ggml: last dim not multiple of block size")
    else:
        _need(bs == 1, "ggml: 0-d")
    R = cfg["rows_per_blob"]
    if numel == 0:
        _need(R == 0 and len(blobs) == 0, "ggml: empty")
        # a row range of an empty tensor with rows ([3, 0]) has b - a rows (fixed after
        # v1-ggml-scales, revision 1.7, found it; see README "Later fixes")
        return np.zeros(tuple(shape) if rng is None else _row_shape(shape, *rng),
                        _np_dtype(dtype))
    _need(1 <= R <= rows, "ggml: rows_per_blob")
    W = numel // rows
    _need(W % bs == 0, "ggml: a row is not a whole number of blocks (1-D blocked tensor?)")
    bpr = W // bs
    _need(len(blobs) == -(-rows // R), "ggml: blob count")
    fields = cfg["fields"]
    F = len(fields)
    allblk = []
    jsel = range(len(blobs))
    if rng is not None:
        ra, rb = rng
        if ra == rb:
            return np.zeros(_row_shape(shape, ra, rb), _np_dtype(dtype))
        jsel = range(ra // R, (rb - 1) // R + 1)
    for j in jsel:
        b = blobs[j]
        data = rd.read_blob(b)
        nrows = min(R, rows - j * R)
        nb = nrows * bpr
        _need(len(data) >= 4 * F, "ggml: blob too short")
        lens = struct.unpack_from(f"<{F}I", data, 0)
        _need(len(data) == 4 * F + sum(lens), "ggml: blob length")
        blk = np.zeros((nb, ts), np.uint8)
        pos, off = 4 * F, 0
        for (n_i, w_i), L in zip(fields, lens, strict=False):
            payload = data[pos:pos + L]
            pos += L
            vals = exact_chunk(payload, nb * n_i // w_i, w_i)
            blk[:, off:off + n_i] = vals.view(np.uint8).reshape(nb, n_i)
            off += n_i
        allblk.append(blk)
    blk = np.concatenate(allblk, axis=0)
    if want_blocks:
        return blk
    if rng is not None:
        r0 = jsel[0] * R
        blk = blk[(ra - r0) * bpr:(rb - r0) * bpr]
        oshape = _row_shape(shape, ra, rb)
    else:
        oshape = tuple(shape)
    if bs == 1:
        return blk.reshape(-1).view(_np_dtype(dtype)).reshape(oshape)
    return ggml_values(typ, blk).reshape(oshape)


CODECS = {
    # id: (kind, config check, decode)
    "exact": ("ab", exact_check, exact_decode),
    "affine": ("aa", affine_check, affine_decode),
    "blockdct": ("aa", blockdct_check, blockdct_decode),
    "vvc": ("ab", video_check, video_decode),
    "hevc": ("ab", video_check, video_decode),
    "av1": ("ab", video_check, video_decode),
    "ffv1": ("ab", video_check, video_decode),
    "rowperm": ("aa", rowperm_check, rowperm_decode),
    "diagscale": ("aa", diagscale_check, diagscale_decode),
    "ggml": ("ab", ggml_check, ggml_decode),
}


# ================================================================= verifier (§9, §12 item 3)
def verify(path):
    """Return (ok, list of (where, error name, message)). Opens, walks the superseded-index
    chain of §9, decodes every tensor whole and every attachment."""
    problems = []
    try:
        r = Reader(path)
    except LlmcError as e:
        return False, [("open", e.name, str(e))]
    try:
        _walk_chain(r)
    except LlmcError as e:
        problems.append(("chain", e.name, str(e)))
    for n in r.tensor_names():
        try:
            r.decode(n)
        except LlmcError as e:
            problems.append((n, e.name, str(e)))
    for n in r.attachment_names():
        try:
            r.attachment(n)
        except LlmcError as e:
            problems.append((n, e.name, str(e)))
    return not problems, problems


def _walk_chain(r):
    buf, A = r.buf, r.A
    prev = r.index.get("previous")
    next_start = r.index_offset  # start of the record that follows the one being checked
    links = 0
    while prev is not None:
        links += 1
        if links > 4096:
            raise E("Malformed", "more than 4096 superseded indexes")  # error name: our guess
        po, pl, pc = prev["index_offset"], prev["index_length"], prev["index_checksum"]
        # 1. bytes inside the file and hash
        if po + pl + 48 > len(buf) or h64(buf[po:po + pl]) != pc:
            raise E("Checksum", f"superseded index at {po}")
        # 2. footer right after it
        ft = buf[po + pl:po + pl + 48]
        if ft[40:48] != MAGIC or h64(ft[0:32]) != struct.unpack_from("<Q", ft, 32)[0]:
            raise E("Checksum", f"superseded footer at {po + pl}")
        fo, fl, fc, fres = struct.unpack_from("<QQQQ", ft, 0)
        if fres != 0 or (fo, fl, fc) != (po, pl, pc):
            raise E("Malformed", f"superseded footer fields at {po + pl}")
        # 3. padding to the next record
        end = po + pl + 48
        if end > next_start:
            raise E("Malformed", "superseded record overlaps the next one")
        if any(buf[end:next_start]):
            raise E("Checksum", "non-zero padding after superseded footer")
        if next_start != align_up(end, A):
            raise E("Malformed", "padding count after superseded footer")
        # 4. valid msgpack map
        old = strict_unpack(bytes(buf[po:po + pl]))
        if not isinstance(old, dict):
            raise E("Malformed", "superseded index is not a map")
        nxt = old.get("previous")
        if nxt is not None:
            if not isinstance(nxt, dict) or not all(is_uint(nxt.get(k)) for k in
                                                    ("index_offset", "index_length", "index_checksum")):
                raise E("Malformed", "superseded previous")
            if nxt["index_offset"] >= po:
                raise E("Malformed", "chain does not go backwards")
        else:
            if po != r.index["data_end"]:
                raise E("Malformed", "oldest index does not begin at data_end")
        next_start = po
        prev = nxt
    return links


# ================================================================= strict bitstream checks (§7.3)
# "Bitstream validity" is a writer rule outside §8 and §12 (a lenient reader decodes such
# blobs); these are the checks that can be made from §7.3's text and the standards it
# cites without parsing slice data. Returns a list of problems (empty: none found).
VVC_RESERVED_TYPES = {4, 5, 6, 11, 26, 27}            # H.266 Table 5 (RSV_*)
VVC_PARAMETER_SETS = {12, 13, 14, 15, 16, 17}         # OPI, DCI, VPS, SPS, PPS, PREFIX_APS
VVC_VCL = set(range(0, 12))
HEVC_RESERVED_TYPES = set(range(10, 16)) | {22, 23} | set(range(24, 32)) | set(range(41, 48))
HEVC_PARAMETER_SETS = {32, 33, 34}
HEVC_VCL = set(range(0, 32))


def _annexb_nals(blob):
    """Split an Annex B byte stream into NAL units (bytes), or raise ValueError."""
    n = len(blob)
    i = 0
    while i < n and blob[i] == 0:  # leading zero bytes (the first start code's zeros too)
        i += 1
    if i < 2 or i >= n or blob[i] != 1:
        raise ValueError("does not begin with a start code")
    i += 1
    nals = []
    while True:
        j = blob.find(b"\x00\x00\x01", i)
        end = n if j < 0 else j
        nal = blob[i:end]
        k = len(nal)
        while k and nal[k - 1] == 0:  # trailing_zero_8bits (and a 4-byte start code's zero)
            k -= 1
        nals.append(nal[:k])
        if j < 0:
            return nals
        i = j + 3


def strict_problems(cid, blob):
    blob = bytes(blob)
    if cid == "av1":
        return _strict_av1(blob)
    if cid not in ("vvc", "hevc"):
        return []
    probs = []
    try:
        nals = _annexb_nals(blob)
    except ValueError as e:
        return [str(e)]
    seen_vcl = False
    for k, nal in enumerate(nals):
        if len(nal) < 3:
            probs.append(f"NAL {k}: shorter than its header")
            continue
        h0, h1 = nal[0], nal[1]
        if h0 & 0x80:
            probs.append(f"NAL {k}: forbidden_zero_bit")
        if cid == "vvc":
            layer, typ, tid1 = h0 & 0x3F, h1 >> 3, h1 & 7
            if h0 & 0x40:
                probs.append(f"NAL {k}: nuh_reserved_zero_bit")
            reserved, psets, vcl = VVC_RESERVED_TYPES, VVC_PARAMETER_SETS, VVC_VCL
            if layer > 55:
                probs.append(f"NAL {k}: reserved nuh_layer_id {layer}")
        else:
            typ, layer, tid1 = (h0 >> 1) & 0x3F, ((h0 & 1) << 5) | (h1 >> 3), h1 & 7
            reserved, psets, vcl = HEVC_RESERVED_TYPES, HEVC_PARAMETER_SETS, HEVC_VCL
            if layer == 63:
                probs.append(f"NAL {k}: reserved nuh_layer_id 63")
        if typ in reserved:
            probs.append(f"NAL {k}: reserved nal_unit_type {typ}")
        if tid1 == 0:
            probs.append(f"NAL {k}: nuh_temporal_id_plus1 = 0")
        for pat in (b"\x00\x00\x00", b"\x00\x00\x01", b"\x00\x00\x02"):
            if pat in nal:
                probs.append(f"NAL {k}: forbidden byte pattern {pat.hex()}")
        p = nal.find(b"\x00\x00\x03")
        while p >= 0:
            if p + 3 < len(nal) and nal[p + 3] > 3:
                probs.append(f"NAL {k}: 000003 followed by {nal[p + 3]:#x}")
            p = nal.find(b"\x00\x00\x03", p + 1)
        body = nal
        if typ in vcl:  # cabac_zero_words (0x0000, after emulation prevention 0x000003)
            while body.endswith(b"\x00\x00\x03"):
                body = body[:-3]
        if not body or body[-1] == 0:
            probs.append(f"NAL {k}: RBSP does not end in rbsp_stop_one_bit")
        if typ in vcl:
            seen_vcl = True
        elif typ in psets and seen_vcl:
            probs.append(f"NAL {k}: parameter set after the slice")
    if not seen_vcl:
        probs.append("no slice")
    return probs


def _leb128(b, i):
    v = 0
    for k in range(8):
        if i >= len(b):
            raise ValueError("leb128 runs past the end")
        v |= (b[i] & 0x7F) << (7 * k)
        i += 1
        if not b[i - 1] & 0x80:
            return v, i
    raise ValueError("leb128 longer than 8 bytes")


def _strict_av1(blob):
    probs, i, k = [], 0, 0
    while i < len(blob):
        h = blob[i]
        typ, ext, has_size = (h >> 3) & 15, (h >> 2) & 1, (h >> 1) & 1
        if h & 0x80:
            probs.append(f"OBU {k}: obu_forbidden_bit")
        if h & 1:
            probs.append(f"OBU {k}: obu_reserved_1bit")
        if typ == 0 or 9 <= typ <= 14:
            probs.append(f"OBU {k}: reserved obu_type {typ}")
        i += 1
        if ext:
            if i >= len(blob):
                return [*probs, f"OBU {k}: extension header past the end"]
            if blob[i] & 7:
                probs.append(f"OBU {k}: extension_header_reserved_3bits")
            i += 1
        if not has_size:
            return [*probs, f"OBU {k}: obu_has_size_field = 0"]
        try:
            size, i = _leb128(blob, i)
        except ValueError as e:
            return [*probs, f"OBU {k}: {e}"]
        if i + size > len(blob):
            return [*probs, f"OBU {k}: payload runs past the end of the blob"]
        payload = blob[i:i + size]
        if typ == 2 and size:
            probs.append(f"OBU {k}: temporal delimiter with a payload")
        if typ in (1, 3) and (not payload or payload[-1] == 0):  # trailing_bits()
            probs.append(f"OBU {k}: no trailing_bits")
        i += size
        k += 1
    return probs
