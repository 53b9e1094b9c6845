"""Run the clean-room reader against every vector in spec/vectors and print an agreement table."""
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import traceback

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from reader import LlmcError, Reader, h64  # noqa: E402

VEC = os.path.join(HERE, "..", "..", "spec", "vectors")


ROWS = "--no-rows" not in sys.argv


def row_ranges(n):
    """Sample of row ranges (§12 item 1): boundaries on multiples of 1, 7, 16, 32 and the ends."""
    pts = sorted({p for p in (0, 1, 2, 7, 14, 16, 31, 32, 33, 64, 100, n // 2, n - 7, n - 1, n) if 0 <= p <= n})
    rngs = [(a, b) for i, a in enumerate(pts) for b in pts[i:]]
    if len(rngs) > 40:  # keep the run short on an overloaded machine
        step = len(rngs) / 40
        rngs = [rngs[int(i * step)] for i in range(40)] + [(0, n), (n, n)]
    return rngs


#: FORMAT.md §11: the NaN that replaces every NaN in `xxh3_nan_canonical`, per dtype
CANONICAL_NAN = {"float32": (np.uint32, 0x7FC00000), "float16": (np.uint16, 0x7E00),
                 "bfloat16": (np.uint16, 0x7FC0)}


def nan_canonical(a, dtype):
    """The tensor's bytes with every NaN element replaced by the dtype's canonical NaN."""
    ints, bits = CANONICAL_NAN[dtype]
    out = np.ascontiguousarray(a).copy().view(ints)
    out[np.isnan(a.astype(np.float32))] = bits
    return out.tobytes()


def nan_keys(a, t):
    """§11's NaN keys of a decoded tensor: which of them disagree with the JSON `t`."""
    bad = []
    if "nan_count" not in t:
        return bad
    mask = np.isnan(np.ascontiguousarray(a).astype(np.float32))
    if int(mask.sum()) != t["nan_count"]:
        bad.append(f"nan_count {int(mask.sum())} != {t['nan_count']}")
    if h64(mask.astype(np.uint8).tobytes()) != t["nan_mask_xxh3"]:
        bad.append("nan_mask_xxh3 mismatch")
    if h64(nan_canonical(a, t["dtype"])) != t["xxh3_nan_canonical"]:
        bad.append("xxh3_nan_canonical mismatch")
    return bad


def check_rows(r, name, whole, dtype=None):
    """Row ranges equal the whole decode's rows; with `dtype` (a tensor whose JSON has no
    `xxh3`: some NaN came from two NaNs, §7.6) up to the bits of NaNs."""
    n = whole.shape[0] if whole.ndim else 1
    bad = []
    for a, b in row_ranges(n):
        try:
            part = r.decode_rows(name, a, b)
            ref = whole[a:b] if whole.ndim else whole.reshape(1)[a:b]  # §7 "Rows": [b − a]
            same = (nan_canonical(part, dtype) == nan_canonical(ref, dtype)) if dtype else \
                part.tobytes() == ref.tobytes()
            if part.shape != ref.shape or not same:
                bad.append(f"{name}: rows [{a},{b}) differ from whole decode")
        except LlmcError as e:
            bad.append(f"{name}: rows [{a},{b}): {e.name} ({e})")
        except Exception as e:
            bad.append(f"{name}: rows [{a},{b}): CRASH {e!r}")
    return bad


def _vvdec_accepts(vvdec, blob):
    """True when VVdeC decodes ``blob`` without error (it checks the bytes after slice data)."""
    with tempfile.TemporaryDirectory() as d:
        src = os.path.join(d, "blob.266")
        with open(src, "wb") as f:
            f.write(bytes(blob))
        p = subprocess.run([vvdec, "-b", src, "-o", os.path.join(d, "out.yuv"), "-t", "1"],
                           capture_output=True, timeout=120)
        return p.returncode == 0


def run_one(path, exp):
    """Return (expected_str, got_str, agree, notes)."""
    notes = []
    if exp["valid"]:
        expected = "valid"
        try:
            r = Reader(path)
        except LlmcError as e:
            return expected, f"{e.name}@open ({e})", False, notes
        names = set(r.tensor_names())
        if names != set(exp["tensors"]):
            notes.append(f"tensor names differ: {sorted(names ^ set(exp['tensors']))}")
        ok = not notes
        bad = []
        for name, t in exp["tensors"].items():
            if name not in names:
                continue
            good = False
            try:
                a = r.decode(name)
                from reader import ITEMSIZE  # noqa
                good = list(a.shape) == t["shape"] and r.tensors[name]["dtype"] == t["dtype"]
                if not good:
                    bad.append(f"{name}: shape or dtype mismatch")
                elif "xxh3" in t and h64(a.tobytes()) != t["xxh3"]:
                    good = False
                    bad.append(f"{name}: xxh3 mismatch")
                for problem in nan_keys(a, t):  # §11: v1-ggml-nonfinite's NaN keys
                    good = False
                    bad.append(f"{name}: {problem}")
                if "digest_decoded" in t and t["digest_decoded"] != (
                        "decoded" in r.tensors[name]["digest"]):
                    good = False
                    bad.append(f"{name}: digest.decoded present != JSON digest_decoded")
            except LlmcError as e:
                bad.append(f"{name}: {e.name} ({e})")
            except Exception as e:  # reader bug
                bad.append(f"{name}: CRASH {e!r}")
            if good and ROWS:
                bad += check_rows(r, name, a, None if "xxh3" in t else t["dtype"])
        for name, x in exp.get("attachments", {}).items():
            try:
                if h64(r.attachment(name)) != x:
                    bad.append(f"attachment {name}: xxh3 mismatch")
            except LlmcError as e:
                bad.append(f"attachment {name}: {e.name} ({e})")
            except Exception as e:
                bad.append(f"attachment {name}: CRASH {e!r}")
        if set(r.attachment_names()) != set(exp.get("attachments", {})):
            bad.append("attachment names differ")
        if "gguf" in exp:  # §12 item 4: the GGUF file rebuilt from the layout record (§7.8)
            import hashlib
            try:
                g = r.rebuild_gguf()
                if len(g) != exp["gguf"]["size"] or hashlib.sha256(g).hexdigest() != exp["gguf"]["sha256"]:
                    bad.append("gguf: rebuilt file differs")
                else:
                    notes.append(f"gguf: rebuilt {len(g)} bytes, sha256 {exp['gguf']['sha256'][:16]}... agrees")
            except LlmcError as e:
                bad.append(f"gguf: {e.name} ({e})")
        n = len(exp["tensors"])
        badt = {b.split(":")[0] for b in bad if not b.startswith("attachment")}
        got = "valid" if not bad else f"{n - len(badt)}/{n} tensors ok"
        notes += bad
        return expected, got, ok and not bad, notes
    expected = f"{exp['error']}@{exp['at']}" + (f"[{exp.get('tensor') or exp.get('attachment')}]" if exp["at"] == "decode" else "")
    try:
        r = Reader(path)
    except LlmcError as e:
        got = f"{e.name}@open"
        return expected, got, got == expected, [str(e)]
    exp.get("tensor")
    errs = []
    for name in r.tensor_names():
        try:
            r.decode(name)
        except LlmcError as e:
            errs.append((name, e))
        except Exception as e:
            notes.append(f"{name}: CRASH {e!r}")
    for name in r.attachment_names():
        try:
            r.attachment(name)
        except LlmcError as e:
            errs.append((name, e))
    if not errs:
        return expected, "opened, everything decoded", False, notes
    got = ";".join(f"{e.name}@{e.phase}[{n}]" for n, e in errs)
    agree = len(errs) == 1 and got == expected and not notes
    notes += [str(e) for _, e in errs]
    return expected, got, agree, notes


def main():
    np.seterr(invalid="ignore", over="ignore")  # NaN/inf scales are data (§7.6): no warnings
    rows = []
    for js in sorted(glob.glob(os.path.join(VEC, "*.json"))):
        name = os.path.basename(js)[:-5]
        exp = json.load(open(js))
        try:
            e, g, a, notes = run_one(js[:-5] + ".llmc", exp)
        except Exception:
            e, g, a, notes = "?", "CRASH", False, [traceback.format_exc(limit=2)]
        rows.append((name, e, g, a, notes))
    w = max(len(r[0]) for r in rows)
    print(f"| {'vector':<{w}} | expected | got | agree |")
    print(f"|{'-' * (w + 2)}|---|---|---|")
    for name, e, g, a, _ in rows:
        print(f"| {name:<{w}} | {e} | {g} | {'yes' if a else 'NO'} |")
    print(f"\nagree: {sum(r[3] for r in rows)}/{len(rows)}")
    # §12 item 3: the verifier (reader.verify, incl. the §9 chain walk)
    from reader import verify
    vagree = 0
    print("\n| vector | verify | expected | agree |\n|---|---|---|---|")
    for name, *_ in rows:
        ok, pr = verify(os.path.join(VEC, name + ".llmc"))
        exp = json.load(open(os.path.join(VEC, name + ".json")))["valid"]
        vagree += ok == exp
        print(f"| {name} | {'intact' if ok else 'not intact: ' + pr[0][1]} | {'intact' if exp else 'not intact'} | {'yes' if ok == exp else 'NO'} |")
    print(f"\nverify agree: {vagree}/{len(rows)}")
    # §7.3 bitstream validity (writer check, outside §12): byte-level checks only
    from reader import Reader as _R
    from reader import strict_problems
    vvdec = shutil.which("vvdecapp")  # §7.3: the slice end is checked by a decoder that checks it
    print("\n| vector | video blobs | byte-level problems | VVdeC rejects | JSON `strict` |"
          "\n|---|---|---|---|---|")
    for name, *_ in rows:
        exp = json.load(open(os.path.join(VEC, name + ".json")))
        if not exp["valid"]:
            continue
        r = _R(os.path.join(VEC, name + ".llmc"))
        nblobs, found, rejected = 0, [], []
        for tn in r.tensor_names():
            t = r.tensors[tn]
            if "alias_of" in t or t["pipeline"][-1]["id"] not in ("vvc", "hevc", "av1"):
                continue
            st = len(t["pipeline"]) - 1
            for k, b in enumerate(x for x in t["blobs"] if x["stage"] == st):
                nblobs += 1
                cid, blob = t["pipeline"][-1]["id"], r.read_blob(b)
                if strict_problems(cid, blob):
                    found.append(f"{tn} frame {k}")
                if vvdec and cid == "vvc" and not _vvdec_accepts(vvdec, blob):
                    rejected.append(f"{tn} frame {k}")
        if nblobs:
            want = exp.get("strict")
            print(f"| {name} | {nblobs} | {', '.join(found) or 'none'} | "
                  f"{(', '.join(rejected) or 'none') if vvdec else 'not installed'} | "
                  f"{want['tensor'] + ' frame ' + str(want['frame']) if want else '-'} |")
    for name, e, g, a, notes in rows:
        if notes and (not a or "-v" in sys.argv):
            print(f"\n{name}:")
            for n in notes:
                print("   ", n)


if __name__ == "__main__":
    main()
