"""Runs every conformance vector of spec/vectors against reader.py (section 12)."""
import glob
import hashlib
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reader  # noqa: E402
from reader import LlmcFile, LlmcError, xxh3, verify, rebuild_gguf  # noqa: E402
import ggml_values  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
VEC = os.path.join(HERE, "..", "..", "spec", "vectors")
FAST = "--fast" in sys.argv


def boundaries(lf, name):
    """row-range boundaries: multiples of 1 (small), 7 and each stage's block/frame size."""
    t = lf.resolve(name)
    shape = t["shape"]
    rows = shape[0] if shape else 1
    steps = {7}
    video = False
    for st in t["pipeline"]:
        i = st.get("id")
        if i == "blockdct":
            steps.add(st["block"])
        elif i in ("vvc", "hevc", "av1", "ffv1"):
            video = True
            fr = st["frames"]
            steps.add(fr["tile_rows"] if len(shape) >= 2 else fr["tile_cols"])
        elif i == "exact" and st.get("chunk_elems"):
            W = max(1, (np.prod(shape, dtype=object) if shape else 1) // max(rows, 1))
            steps.add(max(1, st["chunk_elems"] // W) if W else 1)
        elif i == "ggml" and st.get("rows_per_blob"):
            steps.add(st["rows_per_blob"])
        elif i == "rowperm":
            steps.add(rows // st["heads"])
    pts = {0, rows}
    if rows <= (12 if video else 24):
        pts |= set(range(rows + 1))
    else:
        pts |= {1, rows - 1}
    for s in steps:
        if s <= 0:
            continue
        m = list(range(0, rows + 1, s))
        if len(m) > (8 if video else 24):
            m = m[:3] + m[-3:]
        pts |= set(m)
        for x in list(m):
            for d in (-1, 1):
                if 0 <= x + d <= rows and not video:
                    pts.add(x + d)
    pts = sorted(pts)
    if video and len(pts) > 14:
        pts = pts[:7] + pts[-7:]
    return pts


CANON = {"float32": ("<u4", 0x7FC00000), "float16": ("<u2", 0x7E00), "bfloat16": ("<u2", 0x7FC0)}


def nan_mask(arr):
    if arr.dtype.name in CANON:
        return np.isnan(arr.astype(np.float32))
    return np.zeros(arr.shape, dtype=bool)


def canonical(arr):
    """bytes with every NaN replaced by the dtype's canonical NaN (section 11)."""
    a = np.array(arr, copy=True)
    if a.dtype.name in CANON:
        vt, c = CANON[a.dtype.name]
        v = a.view(vt)
        v[nan_mask(a)] = c
    return a.tobytes()


def check_ranges(lf, name, whole, budget_pairs, nan_tolerant=False):
    pts = boundaries(lf, name)
    pairs = [(a, b) for i, a in enumerate(pts) for b in pts[i + 1:]]
    if len(pairs) > budget_pairs:
        step = len(pairs) / budget_pairs
        pairs = [pairs[int(i * step)] for i in range(budget_pairs)]
    pairs += [(pts[0], pts[0]), (pts[-1], pts[-1]), (pts[len(pts) // 2], pts[len(pts) // 2])]
    shape = list(whole.shape)
    flat = whole.reshape(-1) if len(shape) == 0 else whole
    bad = []
    for a, b in pairs:
        got = lf.read_tensor(name, a, b)
        exp = flat[a:b]
        exp_shape = [b - a] + shape[1:]
        if nan_tolerant:
            same = canonical(got) == canonical(exp) and np.array_equal(nan_mask(got), nan_mask(exp))
        else:
            same = got.tobytes() == exp.tobytes()
        if list(got.shape) != exp_shape or got.dtype != whole.dtype or not same:
            bad.append((a, b))
    return len(pairs), bad


def run_valid(path, exp):
    notes = []
    ok = True
    nranges = 0
    with LlmcFile(path) as lf:
        if sorted(lf.names()) != sorted(exp["tensors"]):
            ok = False
            notes.append("tensor names differ: %s" % sorted(set(lf.names()) ^ set(exp["tensors"])))
        for name, e in exp["tensors"].items():
            if name not in lf.tensors:
                continue
            try:
                arr = lf.read_tensor(name)
            except LlmcError as err:
                ok = False
                notes.append("%s: %s" % (name, err))
                continue
            h = xxh3(arr.tobytes())
            bad = []
            if lf.tensors[name]["dtype"] != e["dtype"] or list(arr.shape) != e["shape"]:
                bad.append("dtype/shape %s %s" % (lf.tensors[name]["dtype"], list(arr.shape)))
            if "xxh3" in e and h != e["xxh3"]:
                bad.append("xxh3 %d != %d" % (h, e["xxh3"]))
            m = nan_mask(arr)
            if "nan_count" in e and int(m.sum()) != e["nan_count"]:
                bad.append("nan_count %d != %d" % (int(m.sum()), e["nan_count"]))
            if "nan_mask_xxh3" in e and xxh3(m.astype(np.uint8).tobytes()) != e["nan_mask_xxh3"]:
                bad.append("nan_mask_xxh3")
            if "xxh3_nan_canonical" in e and xxh3(canonical(arr)) != e["xxh3_nan_canonical"]:
                bad.append("xxh3_nan_canonical")
            if "digest_decoded" in e and ("decoded" in lf.resolve(name)["digest"]) != e["digest_decoded"]:
                notes.append("%s: digest_decoded differs (informative)" % name)
            if "xxh3" not in e:
                notes.append("%s: no xxh3 (two-NaN values): held to the NaN keys only" % name)
            if bad:
                ok = False
                notes.append("%s: %s" % (name, "; ".join(bad)))
                continue
            pid = [s["id"] for s in lf.resolve(name)["pipeline"]]
            video = any(i in pid for i in ("vvc", "hevc", "av1", "ffv1"))
            budget = (6 if video else 40) if FAST else (60 if video else 600)
            try:
                n, badr = check_ranges(lf, name, arr, budget, nan_tolerant="xxh3" not in e)
            except LlmcError as err:
                ok = False
                notes.append("%s: row range: %s" % (name, err))
                continue
            nranges += n
            if badr:
                ok = False
                notes.append("%s: row ranges differ from whole decode: %s" % (name, badr[:5]))
        if sorted(lf.att_order) != sorted(exp.get("attachments", {})):
            ok = False
            notes.append("attachment names differ")
        for name, h in exp.get("attachments", {}).items():
            try:
                got = xxh3(lf.read_attachment(name))
            except (LlmcError, KeyError) as err:
                ok = False
                notes.append("attachment %s: %s" % (name, err))
                continue
            if got != h:
                ok = False
                notes.append("attachment %s: xxh3 %d != %d" % (name, got, h))
        if "gguf" in exp:
            try:
                data = rebuild_gguf(lf)
                sha = hashlib.sha256(data).hexdigest()
                if sha != exp["gguf"]["sha256"] or len(data) != exp["gguf"]["size"]:
                    ok = False
                    notes.append("gguf rebuild: %s %d" % (sha, len(data)))
                else:
                    notes.append("gguf rebuilt (%d bytes, sha256 ok)" % len(data))
            except LlmcError as err:
                ok = False
                notes.append("gguf rebuild: %s" % err)
    got = "valid (%d tensors, %d att., %d ranges)" % (len(exp["tensors"]), len(exp.get("attachments", {})), nranges)
    return ok, got, notes


def run_invalid(path, exp):
    notes = []
    want = (exp["error"], exp["at"])
    try:
        lf = LlmcFile(path)
    except LlmcError as err:
        got = (err.name, err.phase)
        return got == want, "%s@%s" % got, [str(err)]
    with lf:
        target_t = exp.get("tensor")
        target_a = exp.get("attachment")
        got = None
        others_ok = True
        for name in lf.names():
            try:
                lf.read_tensor(name)
                if name == target_t:
                    got = ("(no error)", "decode")
            except LlmcError as err:
                if name == target_t:
                    got = (err.name, err.phase)
                    notes.append(str(err))
                else:
                    others_ok = False
                    notes.append("other tensor %s failed: %s" % (name, err))
        for name in lf.att_order:
            try:
                lf.read_attachment(name)
                if name == target_a:
                    got = ("(no error)", "decode")
            except LlmcError as err:
                if name == target_a:
                    got = (err.name, err.phase)
                else:
                    others_ok = False
                    notes.append("other attachment %s failed: %s" % (name, err))
        if got is None:
            got = ("(opened, nothing failed)", "-")
    return got == want and others_ok, "%s@%s" % got, notes


def main():
    t0 = time.time()
    rows = []
    all_ok = True
    gcheck = ggml_values.check_grids()
    sha = hashlib.sha256(open(os.path.join(HERE, "..", "..", "spec", "ggml-grids.txt"), "rb").read()).hexdigest()
    print("ggml-grids.txt sha256 %s (%s); per-table xxh3: %s" % (
        sha, "ok" if sha == "685ec2f81d6056517372fabb89be58e24f74b54a2458694630bcce2d739a274f" else "DIFFERS",
        "all ok" if all(gcheck.values()) else gcheck))
    only = [a for a in sys.argv[1:] if not a.startswith("--")]
    for jp in sorted(glob.glob(os.path.join(VEC, "*.json"))):
        name = os.path.basename(jp)[:-5]
        if only and name not in only:
            continue
        exp = json.load(open(jp))
        path = jp[:-5] + ".llmc"
        t1 = time.time()
        try:
            if exp["valid"]:
                ok, got, notes = run_valid(path, exp)
                expected = "valid"
            else:
                ok, got, notes = run_invalid(path, exp)
                expected = "%s@%s" % (exp["error"], exp["at"]) + (
                    " (%s)" % (exp.get("tensor") or exp.get("attachment")) if exp["at"] == "decode" else "")
        except Exception as e:  # a crash is a disagreement
            ok, got, notes = False, "CRASH %s: %s" % (type(e).__name__, e), []
            expected = "valid" if exp.get("valid") else exp.get("error")
        vok, vlines = verify(path)
        want_intact = bool(exp["valid"])
        vagree = vok == want_intact
        rows.append((name, expected, got, ok, "intact" if vok else "not intact", vagree, time.time() - t1, notes))
        all_ok = all_ok and ok and vagree
        print("%-28s %-40s %-45s %s | verify %-10s %s  (%.1fs)" % (
            name, expected, got, "AGREE" if ok else "DISAGREE", "intact" if vok else "not-intact",
            "agree" if vagree else "DISAGREE", time.time() - t1), flush=True)
        for n in notes:
            if not ok or "gguf" in n or "no xxh3" in n:
                print("    " + n)
        if exp.get("valid") and any("chain" in l and "link(s)" in l and not l.startswith("chain: 0") for l in vlines):
            print("    " + [l for l in vlines if l.startswith("chain")][0])
    n_ok = sum(1 for r in rows if r[3])
    n_v = sum(1 for r in rows if r[5])
    print("\n%d/%d vectors agree; verify agrees on %d/%d; %.0fs" % (n_ok, len(rows), n_v, len(rows), time.time() - t0))
    print("\n| vector | expected | got | agree | verify |")
    print("|---|---|---|---|---|")
    for r in rows:
        print("| %s | %s | %s | %s | %s (%s) |" % (r[0], r[1], r[2], "yes" if r[3] else "NO", r[4], "agree" if r[5] else "DISAGREE"))
    sys.exit(0 if all_ok else 1)


if __name__ == "__main__":
    main()
