"""Robustness smoke test of reader.py: random bit flips and truncations of the vectors;
every outcome must be an 8.1 error (LlmcError) or success, never another exception."""
import glob, os, random, sys, time, traceback
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reader
HERE = os.path.dirname(os.path.abspath(__file__))
TMP = os.path.join(HERE, "tmp"); os.makedirs(TMP, exist_ok=True)
rng = random.Random(int(sys.argv[1]) if len(sys.argv) > 1 else 1)
N = int(sys.argv[2]) if len(sys.argv) > 2 else 400
vecs = sorted(glob.glob(os.path.join(HERE, "..", "..", "spec", "vectors", "*.llmc")))
stats = {}
crashes = 0
t0 = time.time()
for it in range(N):
    src = rng.choice(vecs)
    d = bytearray(open(src, "rb").read())
    kind = rng.choice(["flip", "flip", "flip", "trunc"])
    if kind == "flip":
        pos = rng.randrange(len(d)); d[pos] ^= 1 << rng.randrange(8)
    else:
        d = d[:rng.randrange(len(d))]
    p = os.path.join(TMP, "fuzz.llmc")
    open(p, "wb").write(bytes(d))
    out = []
    try:
        lf = reader.LlmcFile(p)
        for n in lf.names():
            try:
                lf.read_tensor(n); out.append("ok")
            except reader.LlmcError as e:
                out.append(e.name)
        for n in lf.att_order:
            try:
                lf.read_attachment(n)
            except reader.LlmcError as e:
                out.append(e.name)
        ok, _ = reader.verify(p)
        lf.close()
        key = "open ok, decode errors: " + ",".join(sorted(set(x for x in out if x != "ok"))) if any(x != "ok" for x in out) else ("intact" if ok else "opens, decodes, verify: not intact")
    except reader.LlmcError as e:
        key = "%s@open" % e.name
    except Exception as e:
        crashes += 1
        key = "CRASH %s" % type(e).__name__
        print("CRASH", src, kind, traceback.format_exc().splitlines()[-3:])
    stats[key] = stats.get(key, 0) + 1
    if key.startswith("opens, decodes"): print("  not-intact-only:", os.path.basename(src), kind)
for k, v in sorted(stats.items(), key=lambda x: -x[1]):
    print("%5d  %s" % (v, k))
print("%d cases, %d crashes, %.0fs" % (N, crashes, time.time() - t0))
