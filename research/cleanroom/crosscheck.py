"""Cross-check llmc against the clean-room reader on inputs no vector covers (FORMAT.md rev 1.4).

Not part of the clean-room reader (it imports llmc and tools/make_vectors.py to build the
inputs): attachment names of §5.5 patched into a copy of v1-aliases-attachments, broken
GGUF layout records of §7.8 fed to both parsers, and four `diagscale` (§7.9) tensors llmc
writes, decoded whole and by row ranges. Prints one line per case and the
agreement count.  Run from the repository root:

    PYTHONPATH=. python research/cleanroom/crosscheck.py
"""
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, 'research/cleanroom')
import reader as cr

import llmc_format
from llmc_format.errors import LlmcError
from tools.make_vectors import VECTORS, _mutated

base = (VECTORS / "v1-aliases-attachments.llmc").read_bytes()
cands = ["ok/name.txt", "nul.txt", "a/com1.x", "COM10", "x.", "x /y", "a\tb", "a|b", "a*b",
         "model.safetensors", "MODEL.GGUF", "sub/model.gguf", "pytorch_model-1.bin", "x.index.json",
         "model.ſafetensors", ".llmc-unpack-stage", ".llmc-unpack-stage/x", "CONFIG.json",
         "config.json/x", "é" * 128, "é" * 127 + "a", "lpt9", "aux.tar.gz", "auxiliary", "\x7f",
         "a\\b", ".llmc/x", "Empty.TXT", "con"]
out = []
for name in cands:
    def m(o, name=name):
        next(a for a in o["attachments"] if a["name"] == "notes/raw.txt")["name"] = name
    data = bytearray(base)
    _mutated(m)(data)
    p = Path(tempfile.mkdtemp()) / "names.llmc"
    p.write_bytes(bytes(data))
    try:
        llmc_format.safe_open(p).close(); a = "ok"
    except LlmcError as e:
        a = e.kind
    try:
        cr.Reader(str(p)); b = "ok"
    except cr.LlmcError as e:
        b = e.name
    out.append((name, a, b))
    print(f"{name[:30]!r:34} llmc={a:10} cleanroom={b:10} {'agree' if a == b else 'DIFFER'}")
print(sum(a == b for _, a, b in out), "/", len(out), "agree")


# §7.8 layout records: both parsers must give the same §8.1 name (or accept)
import msgpack  # noqa: E402

from llmc_format.io.gguf_layout import parse_record  # noqa: E402

r = cr.Reader(str(VECTORS / "v1-gguf.llmc"))
good_raw = r.attachment(cr.LAYOUT)
good = msgpack.unpackb(good_raw, raw=False)
ent0 = good["tensors"][0]
cases = {
    "good": good_raw,
    "trailing byte": good_raw + b"\x00",
    "version 2": msgpack.packb({**good, "version": 2}),
    "version 1.0": msgpack.packb({**good, "version": 1.0}),
    "version true": msgpack.packb({**good, "version": True}),
    "sha256 upper": msgpack.packb({**good, "sha256": good["sha256"].upper()}),
    "size off by one": msgpack.packb({**good, "size": good["size"] + 1}),
    "ext type in unknown key": msgpack.packb({**good, "x": msgpack.ExtType(3, b"a")}),
    "unknown key": msgpack.packb({**good, "note": "fine"}),
    "entry with tensor and data": msgpack.packb({**good, "tensors": [{**ent0, "data": b"x"}, *good["tensors"][1:]]}),
    "entry with neither": msgpack.packb({**good, "tensors": [{k: v for k, v in ent0.items() if k != "tensor"}, *good["tensors"][1:]]}),
    "prefix as str": msgpack.packb({**good, "prefix": "GGUF"}),
    "not a map": msgpack.packb([1, 2]),
}
agree = 0
for what, raw in cases.items():
    try:
        parse_record(raw); a = "ok"
    except LlmcError as e:
        a = e.kind
    try:
        cr.parse_layout(raw); b = "ok"
    except cr.LlmcError as e:
        b = e.name
    agree += a == b
    print(f"layout record: {what:28} llmc={a:8} cleanroom={b:8} {'agree' if a == b else 'DIFFER'}")
print(agree, "/", len(cases), "layout-record cases agree")


# §7.9 diagscale: no vector has it yet; llmc writes four tensors, both readers decode them
import numpy as np  # noqa: E402

from tools.make_vectors import _w, write_archive  # noqa: E402

rng = np.random.default_rng(5)
tensors = []
for i, (shape, dt, cols, rows, rest) in enumerate([
        ((64, 48), np.float32, True, True, [{"id": "exact"}]),
        ((40, 24), np.float16, True, False, [{"id": "affine", "bits": 10},
                                             {"id": "hevc", "bits": 10, "qp": 28}]),
        ((96,), np.float32, False, True, [{"id": "exact"}]),
        ((32, 2, 16), np.float64, True, True, [{"id": "affine", "bits": 10},
                                               {"id": "vvc", "bits": 10, "qp": 30}])]):
    R, C = shape[0], int(np.prod(shape[1:])) if len(shape) > 1 else 1
    ds = {"id": "diagscale"}
    if cols:
        ds["col_scale"] = list(rng.uniform(0.3, 3, C))
    if rows:
        ds["row_scale"] = list(rng.uniform(0.3, 3, R))
    tensors.append((f"t{i}", _w(shape, 40 + i, dt), [ds, *rest]))
ds_path = Path(tempfile.mkdtemp()) / "diagscale.llmc"
write_archive(ds_path, tensors)
r = cr.Reader(str(ds_path))
agree = 0
with llmc_format.safe_open(ds_path) as f:
    for name in f.keys():
        a, b = f.get_tensor(name), r.decode(name)
        n = a.shape[0]
        same = a.tobytes() == b.tobytes() and a.shape == b.shape and all(
            r.decode_rows(name, s, e).tobytes() == a[s:e].tobytes()
            for s, e in ((0, 3), (5, 17), (n - 1, n), (2, 2)))
        agree += same
        print(f"diagscale {name} {[c['id'] for c in r.tensors[name]['pipeline']]}: "
              f"{'agree' if same else 'DIFFER'}")
print(agree, "/", len(tensors), "diagscale tensors agree (whole and row ranges)")
