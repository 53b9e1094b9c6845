"""Hand-made variants of the vectors (index rewritten, checksums fixed) for the cases the
spec spells out with examples. Files go to ./tmp. Prints case | expected | got."""
import os
import struct
import sys

import msgpack

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reader  # noqa: E402
from reader import LlmcFile, LlmcError, xxh3, MAGIC  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
TMP = os.path.join(HERE, "tmp")
os.makedirs(TMP, exist_ok=True)
V = os.path.join(HERE, "..", "..", "spec", "vectors")


def load(name):
    d = open(os.path.join(V, name + ".llmc"), "rb").read()
    ioff, ilen = struct.unpack_from("<QQ", d, len(d) - 48)
    idx, _ = reader.mp_decode(d[ioff:ioff + ilen])
    return d, ioff, idx


def build(d, ioff, idx_bytes):
    foot = struct.pack("<QQQQ", ioff, len(idx_bytes), xxh3(idx_bytes), 0)
    foot += struct.pack("<Q", xxh3(foot)) + MAGIC
    return d[:ioff] + idx_bytes + foot


def write(case, data):
    p = os.path.join(TMP, case + ".llmc")
    with open(p, "wb") as f:
        f.write(data)
    return p


def variant(case, base, mutate, raw=None):
    d, ioff, idx = load(base)
    if raw is None:
        mutate(idx)
        ib = msgpack.packb(idx, use_bin_type=True)
    else:
        ib = raw(idx)
    return write(case, build(d, ioff, ib))


def outcome(path, tensor=None, att=None):
    try:
        lf = LlmcFile(path)
    except LlmcError as e:
        return "%s@open" % e.name
    with lf:
        try:
            if tensor:
                lf.read_tensor(tensor)
            if att:
                lf.read_attachment(att)
        except LlmcError as e:
            return "%s@decode" % e.name
    return "ok"


def T(idx, name):
    return next(t for t in idx["tensors"] if t["name"] == name)


CASES = []


def case(name, base, expect, tensor=None, att=None, raw=None):
    def deco(fn):
        CASES.append((name, base, fn, expect, tensor, att, raw))
        return fn
    return deco


@case("affine-bad-then-zfp", "v1-lossy-vvc-2", "Decode@decode", "mlp.weight")
def _(idx):
    t = T(idx, "mlp.weight")
    t["pipeline"][0]["bits"] = 99
    t["pipeline"][1]["id"] = "zfp"


@case("zfp-then-affine-bad", "v1-lossy-vvc-2", "UnsupportedCodec@decode", "mlp.weight")
def _(idx):
    t = T(idx, "mlp.weight")
    t["pipeline"][0]["id"] = "zfp"
    t["pipeline"][1]["bits"] = 99


@case("shape-2^40,2^40,0", "v1-exact-basic", "Limit@open")
def _(idx):
    T(idx, "empty.f32")["shape"] = [2 ** 40, 2 ** 40, 0]


@case("shape-0,2^40,2^40", "v1-exact-basic", "Limit@decode", "empty.f32")
def _(idx):
    T(idx, "empty.f32")["shape"] = [0, 2 ** 40, 2 ** 40]


@case("nil-encoder_version", "v1-lossy-vvc-2", "Decode@decode", "mlp.weight")
def _(idx):
    T(idx, "mlp.weight")["pipeline"][1]["encoder_version"] = None


@case("metadata-nest-33", "v1-exact-basic", "Limit@open")
def _(idx):
    v = {}
    for _ in range(32):
        v = {"a": v}
    idx["metadata"]["user"] = v  # metadata level 1, user level 2 ... 34


@case("metadata-nest-32", "v1-exact-basic", "ok")
def _(idx):
    v = {}
    for _ in range(30):
        v = {"a": v}
    idx["metadata"]["user"] = v


@case("pipeline-nest-33", "v1-exact-basic", "Limit@open")
def _(idx):
    v = []
    for _ in range(31):
        v = [v]
    T(idx, "q.i8")["pipeline"][0]["x"] = v


@case("tensor-__metadata__", "v1-exact-basic", "Malformed@open")
def _(idx):
    T(idx, "q.i8")["name"] = "__metadata__"


@case("empty-pipeline", "v1-exact-basic", "Limit@open")
def _(idx):
    T(idx, "q.i8")["pipeline"] = []


@case("unknown-dtype", "v1-exact-basic", "Malformed@open")
def _(idx):
    T(idx, "q.i8")["dtype"] = "int4"


@case("alias-of-alias", "v1-aliases-attachments", "Malformed@open")
def _(idx):
    T(idx, "lm_head.weight")["alias_of"] = "norm.alias"


for bad in ["../evil", "/abs", "a//b", "a\\b", "c:x", "NUL.txt", "a/com1.x", "model.safetensors",
            "Model.GGUF", "pytorch_model-00001.bin", "x.index.json", ".llmc-unpack-stage/x",
            "a.", "a ", "tab\tname", "q?", "CONFIG.JSON"]:
    def mk(bad):
        def f(idx):
            idx["attachments"][1]["name"] = bad
        return f
    case("att-name %r" % bad, "v1-aliases-attachments", "Malformed@open")(mk(bad))


@case("att-name-file-and-dir", "v1-aliases-attachments", "Malformed@open")
def _(idx):
    idx["attachments"][1]["name"] = "Notes"  # notes/raw.txt exists


@case("att-name-1025-bytes", "v1-aliases-attachments", "Limit@open")
def _(idx):
    idx["attachments"][1]["name"] = "/".join(["a" * 200] * 5) + "b" * 21


@case("tensor-att-same-name", "v1-aliases-attachments", "ok", "embed.weight")
def _(idx):
    idx["attachments"][1]["name"] = "embed.weight"


@case("alias-fanout", "v1-aliases-attachments", "ok", "norm.alias")
def _(idx):
    pass


@case("blob-count-wrong", "v1-exact-basic", "Decode@decode", "layer.weight.f32")
def _(idx):
    t = T(idx, "layer.weight.f32")
    t["pipeline"][0]["chunk_elems"] = 1000


@case("exact-chunk_bytes-0", "v1-exact-basic", "Decode@decode", "q.i8")
def _(idx):
    T(idx, "q.i8")["pipeline"][0]["chunk_bytes"] = 0


@case("exact-layout-true", "v1-exact-basic", "Decode@decode", "q.i8")
def _(idx):
    T(idx, "q.i8")["pipeline"][0]["layout"] = True


@case("exact-extra-key", "v1-exact-basic", "Decode@decode", "q.i8")
def _(idx):
    T(idx, "q.i8")["pipeline"][0]["foo"] = 1


@case("rowperm-bad-rows", "v1-gguf", "Decode@decode", "blk.0.attn_q.weight")
def _(idx):
    T(idx, "blk.0.attn_q.weight")["pipeline"][0]["heads"] = 3


@case("ggml-rows_per_blob-too-big", "v1-gguf", "Decode@decode", "blk.0.attn_k.weight")
def _(idx):
    T(idx, "blk.0.attn_k.weight")["pipeline"][0]["rows_per_blob"] = 5


@case("unknown-top-key", "v1-exact-basic", "ok", "q.i8")
def _(idx):
    idx["zzz"] = {"a": [1, 2]}


@case("digest-decoded-absent", "v1-exact-basic", "ok", "q.i8")
def _(idx):
    del T(idx, "q.i8")["digest"]["decoded"]


@case("digest-absent", "v1-exact-basic", "Malformed@open")
def _(idx):
    del T(idx, "q.i8")["digest"]


@case("non-str-key-in-user-meta", "v1-exact-basic", "Malformed@open", raw=lambda idx: (
    idx["metadata"].__setitem__("user", {}),
    msgpack.packb(idx, use_bin_type=True).replace(b"\xa4user\x80", b"\xa4user\x81\x01\x02"))[1])
def _(idx):
    pass


@case("trailing-bytes", "v1-exact-basic", "Malformed@open",
      raw=lambda idx: msgpack.packb(idx, use_bin_type=True) + b"\xc0")
def _(idx):
    pass


@case("invalid-utf8-in-user-meta", "v1-exact-basic", "Malformed@open", raw=lambda idx: (
    idx["metadata"].__setitem__("user", {"k": "\u00e9"}),
    msgpack.packb(idx, use_bin_type=True).replace("\u00e9".encode(), b"\xff\xfe"))[1])
def _(idx):
    pass


@case("zstd-att-size-over-bound", "v1-aliases-attachments", "Limit@decode", att="config.json")
def _(idx):
    a = next(a for a in idx["attachments"] if a["name"] == "config.json")
    a["size"] = 2 ** 15 * a["blob"]["length"] + 1


@case("zstd-att-size-wrong", "v1-aliases-attachments", "Decode@decode", att="config.json")
def _(idx):
    a = next(a for a in idx["attachments"] if a["name"] == "config.json")
    a["size"] += 1


@case("raw-att-size-wrong", "v1-aliases-attachments", "Malformed@open")
def _(idx):
    a = next(a for a in idx["attachments"] if a["name"] == "notes/raw.txt")
    a["size"] += 1


@case("att-blob-stage-1", "v1-aliases-attachments", "Malformed@open")
def _(idx):
    idx["attachments"][0]["blob"]["stage"] = 1


@case("previous-after-index", "v1-metadata-update", "Malformed@open")
def _(idx):
    idx["previous"]["index_offset"] += 10 ** 6


@case("data_end-off", "v1-exact-basic", "Malformed@open")
def _(idx):
    idx["data_end"] += 64


@case("row-range-check-order", "v1-exact-basic", "UnsupportedCodec@decode", "q.i8")
def _(idx):
    T(idx, "q.i8")["pipeline"][0]["id"] = "zfp"


@case("alias-rule10-fanout", "v1-aliases-attachments", "Limit@decode", "norm.alias")
def _(idx):
    L = sum(b["length"] for b in T(idx, "norm.weight")["blobs"])
    for i in range(2 ** 15 * L // 192 + 2):
        idx["tensors"].append({"name": "fan%d" % i, "dtype": "float32", "shape": [48], "alias_of": "norm.weight"})


def special_files():
    out = []
    for nm, data, exp in [("empty", b"", "Truncated@open"), ("magic3", MAGIC[:3], "Truncated@open"),
                          ("magic+10", MAGIC + b"\x01\x00", "Truncated@open"),
                          ("abc", b"abc", "Malformed@open")]:
        out.append(("short-" + nm, exp, outcome(write("short-" + nm, data))))
    d = open(os.path.join(V, "bad-future-major.llmc"), "rb").read()
    dd = bytearray(d)
    dd[40] = 1  # reserved byte -> header checksum breaks first
    out.append(("future-major+damaged-header", "Checksum@open", outcome(write("fm-damaged", bytes(dd)))))
    return out


def chain_cases():
    out = []
    d = open(os.path.join(V, "v1-metadata-update.llmc"), "rb").read()
    lf = LlmcFile(os.path.join(V, "v1-metadata-update.llmc"))
    po, pl = lf.previous["index_offset"], lf.previous["index_length"]
    de, cur = lf.data_end, lf.index_offset
    lf.close()
    out.append(("chain: untouched", "intact", d))
    dd = bytearray(d); dd[po + 3] ^= 1
    out.append(("chain: superseded index bit flip", "not intact", bytes(dd)))
    dd = bytearray(d); dd[po + pl + 5] ^= 1
    out.append(("chain: superseded footer bit flip", "not intact", bytes(dd)))
    if cur > po + pl + 48:
        dd = bytearray(d); dd[cur - 1] = 7
        out.append(("chain: non-zero gap", "not intact", bytes(dd)))
    res = []
    for n, e, data in out:
        p = write(n.replace(" ", "_").replace(":", ""), data)
        try:
            LlmcFile(p).close()
            opened = "opens"
        except LlmcError as err:
            opened = err.name
        ok, _ = reader.verify(p)
        res.append((n + " (%s)" % opened, e, "intact" if ok else "not intact"))
    return res


def main():
    rows = special_files() + chain_cases()
    for name, base, fn, expect, tensor, att, raw in CASES:
        p = variant(name.replace(" ", "_").replace("/", "_").replace("\\", "_").replace("'", "")[:60], base, fn, raw)
        rows.append((name, expect, outcome(p, tensor, att)))
    bad = 0
    for n, e, g in rows:
        flag = "" if e == g else "   <-- DIFFERS"
        bad += e != g
        print("%-40s %-26s %-26s%s" % (n, e, g, flag))
    print("%d/%d as expected" % (len(rows) - bad, len(rows)))


if __name__ == "__main__":
    main()
