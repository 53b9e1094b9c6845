"""Optional: decode every video blob of the valid vectors with an independent decoder
(VVdeC, libde265, dav1d, aomdec) and compare the luma hash with frame_hashes (section 7.3).
FFV1 has no independent decoder here (skipped)."""
import glob
import os
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reader  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
TMP = os.path.join(HERE, "tmp")
os.makedirs(TMP, exist_ok=True)


def run(cmd):
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)
    return p.returncode, (p.stdout + p.stderr).decode(errors="replace")


def luma_hash(yuv, W, H, depth):
    bps = 1 if depth <= 8 else 2
    need = W * H * bps
    if len(yuv) < need:
        return None
    a = np.frombuffer(yuv[:need], dtype=np.uint8 if bps == 1 else "<u2").astype("<u2")
    return "%016x" % reader.xxh3(a.tobytes())


def decoders(cid, encoder):
    if cid == "vvc":
        return [("vvdecapp", lambda i, o: ["vvdecapp", "-b", i, "-o", o, "-t", "1", "-v", "1"])]
    if cid == "hevc":
        return [("libde265", lambda i, o: ["libde265-dec265", "-q", "-t", "0", "-o", o, i])]
    if cid == "av1":
        return [("dav1d", lambda i, o: ["dav1d", "-q", "--threads", "1", "-i", i, "-o", o]),
                ("aomdec", lambda i, o: ["aomdec", "--rawvideo", "-o", o, i])]
    return []


def main():
    total = agree = 0
    res = {}
    for path in sorted(glob.glob(os.path.join(HERE, "..", "..", "spec", "vectors", "v1-*.llmc"))):
        lf = reader.LlmcFile(path)
        for name in lf.names():
            t = lf.tensors[name]
            if "alias_of" in t:
                continue
            for s, st in enumerate(t["pipeline"]):
                cid = st["id"]
                if cid not in ("vvc", "hevc", "av1"):
                    continue
                fr = st["frames"]
                chroma, depth = reader.PIXFMT[st["pix_fmt"]]
                bl = [b for b in t["blobs"] if b["stage"] == s]
                ncol = -(-fr["cols"] // fr["tile_cols"])
                for k, bm in enumerate(bl):
                    i, j = divmod(k, ncol)
                    r0, r1 = i * fr["tile_rows"], min((i + 1) * fr["tile_rows"], fr["rows"])
                    c0, c1 = j * fr["tile_cols"], min((j + 1) * fr["tile_cols"], fr["cols"])
                    H = max(fr["min_size"], reader.align_up(r1 - r0, fr["align"]))
                    W = max(fr["min_size"], reader.align_up(c1 - c0, fr["align"]))
                    blob = lf.read_blob(bm, name)
                    ext = {"vvc": ".266", "hevc": ".265", "av1": ".obu"}[cid]
                    inp = os.path.join(TMP, "blob" + ext)
                    with open(inp, "wb") as f:
                        f.write(blob)
                    for dname, mk in decoders(cid, st["encoder"]):
                        out = os.path.join(TMP, "out.yuv")
                        if os.path.exists(out):
                            os.remove(out)
                        rc, msg = run(mk(inp, out))
                        y = open(out, "rb").read() if os.path.exists(out) else b""
                        h = luma_hash(y, W, H, depth)
                        ok = h == st["frame_hashes"][k]
                        total += 1
                        agree += ok
                        key = (os.path.basename(path), name, k, dname)
                        res[key] = ok
                        if not ok:
                            print("MISMATCH %s %s frame %d %s: rc=%d hash=%s want=%s %s" % (
                                os.path.basename(path), name, k, dname, rc, h, st["frame_hashes"][k],
                                msg.strip().splitlines()[-1:] if msg.strip() else ""))
        lf.close()
    by = {}
    for (v, n, k, d), ok in res.items():
        by.setdefault(d, [0, 0])
        by[d][0] += ok
        by[d][1] += 1
    print("independent decoders: %d/%d frame hashes reproduced; %s" % (
        agree, total, ", ".join("%s %d/%d" % (d, a, b) for d, (a, b) in by.items())))


if __name__ == "__main__":
    main()
