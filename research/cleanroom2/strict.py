"""Optional writer-conformance check of section 7.3 "Bitstream validity" (`verify --strict`
in the reference implementation; outside section 8 and 12). Byte-level rules for vvc/hevc
(Annex B byte stream, NAL headers, emulation prevention, stop bits, parameter-set order)
and av1 (OBU walk), plus VVdeC for vvc blobs (slice-data end)."""
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reader  # noqa: E402

VVC_RSV_TYPES = {4, 5, 6, 11, 26, 27}
HEVC_RSV_TYPES = set(range(10, 16)) | {22, 23} | set(range(24, 32)) | set(range(41, 48))


def annexb_nals(b):
    """split an Annex B byte stream; raises ValueError."""
    n = len(b)
    i = 0
    z = 0
    while i < n and b[i] == 0:
        i += 1
        z += 1
    if i >= n or b[i] != 1 or z < 2:
        raise ValueError("byte stream does not start with a start code")
    i += 1
    nals = []
    while True:
        start = i
        # scan to the next 00 00 0x (x <= 2) pattern or the end
        j = i
        while True:
            if j + 2 >= n:
                j = n
                break
            if b[j] == 0 and b[j + 1] == 0 and b[j + 2] <= 3:
                if b[j + 2] == 3:
                    if j + 3 < n and b[j + 3] > 3:
                        raise ValueError("00 00 03 followed by a byte > 3")
                    j += 3
                    continue
                break
            j += 1
        nal = b[start:j]
        nals.append(nal)
        if j >= n:
            break
        # at 00 00 00, 00 00 01 or 00 00 02
        if b[j + 2] == 2:
            raise ValueError("byte pattern 00 00 02")
        k = j
        while k < n and b[k] == 0:
            k += 1
        if k >= n:
            break  # trailing zero bytes
        if b[k] != 1:
            raise ValueError("byte pattern 00 00 00 not followed by a start code")
        i = k + 1
    return nals


def rbsp(nal):
    out = bytearray()
    z = 0
    for x in nal:
        if z >= 2 and x == 3:
            z = 0
            continue
        out.append(x)
        z = z + 1 if x == 0 else 0
    return bytes(out)


def check_nal_stream(b, cid):
    nals = annexb_nals(b)
    seen = set()
    nvcl = 0
    for nal in nals:
        if len(nal) < 2:
            raise ValueError("NAL unit shorter than its header")
        h0, h1 = nal[0], nal[1]
        if h0 >> 7:
            raise ValueError("forbidden_zero_bit set")
        if cid == "vvc":
            if (h0 >> 6) & 1:
                raise ValueError("nuh_reserved_zero_bit set")
            layer = h0 & 63
            typ = h1 >> 3
            tid1 = h1 & 7
            rsv_t, rsv_l, vcl, need = VVC_RSV_TYPES, set(range(56, 64)), range(0, 12), (15, 16)
        else:
            typ = (h0 >> 1) & 63
            layer = ((h0 & 1) << 5) | (h1 >> 3)
            tid1 = h1 & 7
            rsv_t, rsv_l, vcl, need = HEVC_RSV_TYPES, {63}, range(0, 32), (32, 33, 34)
        if typ in rsv_t:
            raise ValueError("reserved nal_unit_type %d" % typ)
        if layer in rsv_l:
            raise ValueError("reserved nuh_layer_id %d" % layer)
        if tid1 == 0:
            raise ValueError("nuh_temporal_id_plus1 = 0")
        r = rbsp(nal[2:])
        # strip cabac_zero_words (0x0000) after a slice's rbsp_slice_trailing_bits
        if typ in vcl:
            while r.endswith(b"\x00\x00"):
                r = r[:-2]
        if not r or r[-1] == 0:
            raise ValueError("RBSP of NAL type %d does not end in rbsp_stop_one_bit" % typ)
        if typ in vcl:
            nvcl += 1
            for p in need:
                if p not in seen:
                    raise ValueError("slice before parameter set type %d" % p)
        seen.add(typ)
    if nvcl == 0:
        raise ValueError("no VCL NAL unit")


def leb128(b, i):
    v = 0
    for k in range(8):
        if i >= len(b):
            raise ValueError("leb128 beyond the blob")
        x = b[i]
        i += 1
        v |= (x & 0x7F) << (7 * k)
        if not (x & 0x80):
            return v, i
    raise ValueError("leb128 longer than 8 bytes")


def check_obus(b):
    i = 0
    n = len(b)
    while i < n:
        h = b[i]
        i += 1
        if h >> 7:
            raise ValueError("obu_forbidden_bit set")
        typ = (h >> 3) & 15
        ext = (h >> 2) & 1
        has_size = (h >> 1) & 1
        if h & 1:
            raise ValueError("obu_reserved_1bit set")
        if typ in (0, 9, 10, 11, 12, 13, 14):
            raise ValueError("reserved OBU type %d" % typ)
        if not has_size:
            raise ValueError("obu_has_size_field = 0")
        if ext:
            if i >= n:
                raise ValueError("extension header beyond the blob")
            if b[i] & 7:
                raise ValueError("extension reserved bits set")
            i += 1
        sz, i = leb128(b, i)
        if i + sz > n:
            raise ValueError("OBU beyond the blob")
        pay = b[i:i + sz]
        i += sz
        if typ not in (4, 6, 8) and sz > 0 and pay[-1] == 0:
            raise ValueError("OBU type %d without trailing_bits" % typ)


def vvdec_ok(blob):
    exe = shutil.which("vvdecapp")
    if not exe:
        return None
    with tempfile.TemporaryDirectory(dir=os.path.join(os.path.dirname(os.path.abspath(__file__)), "tmp")) as d:
        p = os.path.join(d, "b.266")
        with open(p, "wb") as f:
            f.write(blob)
        r = subprocess.run([exe, "-b", p, "-o", os.path.join(d, "o.yuv"), "-v", "1", "-t", "1"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)
        return r.returncode == 0


def strict(path):
    """returns a list of (tensor, frame, message) findings (each a `Decode` of the writer)."""
    os.makedirs(os.path.join(os.path.dirname(os.path.abspath(__file__)), "tmp"), exist_ok=True)
    out = []
    with reader.LlmcFile(path) as lf:
        for name in lf.names():
            t = lf.tensors[name]
            if "alias_of" in t:
                continue
            for s, st in enumerate(t["pipeline"]):
                cid = st.get("id")
                if cid not in ("vvc", "hevc", "av1"):
                    continue
                bl = [bm for bm in t["blobs"] if bm["stage"] == s]
                for k, bm in enumerate(bl):
                    blob = lf.read_blob(bm, name)
                    try:
                        if cid == "av1":
                            check_obus(blob)
                        else:
                            check_nal_stream(blob, cid)
                    except ValueError as e:
                        out.append((name, k, "byte level: %s" % e))
                        continue
                    if cid == "vvc" and vvdec_ok(blob) is False:
                        out.append((name, k, "VVdeC rejects the blob (slice data)"))
    return out


if __name__ == "__main__":
    import glob
    paths = sys.argv[1:] or sorted(glob.glob(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                          "..", "..", "spec", "vectors", "v1-*.llmc")))
    for p in paths:
        f = strict(p)
        print("%-28s %s" % (os.path.basename(p), "strict ok" if not f else "; ".join(
            "Decode %s frame %d: %s" % x for x in f)))
