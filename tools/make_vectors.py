"""Write the conformance vectors in spec/vectors/ (run once per new vector; never rewrite one).

    python tools/make_vectors.py [--only NAME] [--force]

Each vector ``NAME.llmc`` has ``NAME.json``: for valid files, every tensor's dtype, shape
and XXH3-64 of its decoded bytes, plus attachments; for invalid files, the error class a
reader must raise. Existing vectors are left alone unless ``--force`` (which a published
vector must never need: tests/test_vectors.py proves old files still read).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import ml_dtypes
import numpy as np

import llmc_format
from llmc_format.container import layout
from llmc_format.container.writer import append_metadata_update
from llmc_format.pipeline.pack import tensor_digest

VECTORS = Path(__file__).resolve().parent.parent / "spec" / "vectors"


def _basic_tensors() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1234)
    w = (rng.standard_normal((64, 48)) * 0.02).astype(np.float32)
    return {
        "layer.weight.f32": w,
        "layer.weight.bf16": w.astype(ml_dtypes.bfloat16),
        "layer.weight.f16": w.astype(np.float16),
        "specials.f32": np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-45, 3.4e38],
                                 dtype=np.float32),
        "ids.i64": np.arange(-5, 5, dtype=np.int64),
        "mask.bool": np.array([[True, False], [False, True]]),
        "scalar.f64": np.array(3.25, dtype=np.float64),
        "empty.f32": np.zeros((0, 8), dtype=np.float32),
        "q.i8": rng.integers(-128, 128, size=(16, 16), dtype=np.int8),
    }


def _lossy_tensors() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(99)
    return {
        "mlp.weight": (rng.standard_normal((256, 192)) * 0.05).astype(np.float32),
        "norm.weight": np.ones(192, dtype=np.float32),
    }


def _ggml_blocks(type_name: str, rows: int, blocks_per_row: int, seed: int) -> np.ndarray:
    """Deterministic blocks of a ggml type: random bytes, every 2-byte field a finite
    float16 in [0, 0.01) (so that scales are sane), as uint8 (rows, row_bytes)."""
    from llmc_format.codecs.ggml_types import TYPES

    t = TYPES[type_name]
    rng = np.random.default_rng(seed)
    n = rows * blocks_per_row
    b = rng.integers(0, 256, size=(n, t.type_size), dtype=np.uint8)
    off = 0
    for size, width in t.fields:
        if width == 2:
            b[:, off:off + size] = rng.uniform(0, 0.01, (n, size // 2)).astype(
                np.float16).view(np.uint8).reshape(n, size)
        off += size
    return b.reshape(rows, -1)


#: the v1-ggml vector: name -> (ggml type, rows, blocks per row, array stages before ggml)
GGML_VECTOR = {
    "attn_q.Q4_1": ("Q4_1", 16, 2, [{"id": "rowperm", "heads": 2}]),
    "embed.Q8_0": ("Q8_0", 10, 3, []),
    "mlp.Q4_K": ("Q4_K", 6, 1, []),
    "mlp.Q6_K": ("Q6_K", 5, 2, []),
    "mlp.Q5_0": ("Q5_0", 7, 2, []),
    "mlp.IQ4_XS": ("IQ4_XS", 3, 1, []),
    "norm.F16": ("F16", 1, 40, []),
}


def write_ggml_vector(p: Path) -> dict[str, int]:
    """v1-ggml (spec §7.6/§7.7): tensors stored as ggml blocks, chunked 4 rows per blob.
    Returns name -> XXH3-64 of each tensor's blocks (what ``decode_blocks`` must give)."""
    from llmc_format.codecs.base import ArraySpec
    from llmc_format.codecs.ggml_types import TYPES
    from llmc_format.codecs.pipeline import encode_native
    from llmc_format.container.index import TensorEntry
    from llmc_format.container.writer import Writer

    blocks_digest = {}
    with Writer(p, metadata={"purpose": "conformance", "vector": "v1-ggml"}) as w:
        for i, (name, (type_name, rows, bpr, stages)) in enumerate(GGML_VECTOR.items()):
            t = TYPES[type_name]
            raw = _ggml_blocks(type_name, rows, bpr, seed=100 + i)
            spec = ArraySpec(t.dtype, (rows, bpr * t.block_size), name)
            chunk = 4 * raw.shape[1]
            enc = encode_native(raw, spec, [*stages, {"id": "ggml", "type": type_name,
                                                      "chunk_bytes": chunk}])
            refs = tuple(w.add_blob(b, stage) for stage, b in enc.blobs)
            blocks_digest[name] = layout.checksum(raw.tobytes())
            w.add_tensor(TensorEntry(name, spec.dtype, spec.shape, tuple(enc.pipeline), refs,
                                     digest={"source": blocks_digest[name]}))
    return blocks_digest


def make_valid(name: str, write: Callable[[Path], None]) -> None:
    path = VECTORS / f"{name}.llmc"
    write(path)
    expected: dict = {"valid": True, "tensors": {}, "attachments": {}}
    with llmc_format.safe_open(path) as f:
        for k in f.keys():
            arr = f.get_tensor(k)
            expected["tensors"][k] = {"dtype": f.info(k)["dtype"], "shape": list(arr.shape),
                                      "xxh3": tensor_digest(arr)}
        for a in f.attachments():
            expected["attachments"][a] = layout.checksum(f.read_attachment(a))
    (VECTORS / f"{name}.json").write_text(json.dumps(expected, indent=1, sort_keys=True) + "\n")


def make_invalid(name: str, base: str, patch: Callable[[bytearray], None], error: str) -> None:
    data = bytearray((VECTORS / f"{base}.llmc").read_bytes())
    patch(data)
    (VECTORS / f"{name}.llmc").write_bytes(bytes(data))
    (VECTORS / f"{name}.json").write_text(json.dumps({"valid": False, "error": error}) + "\n")


def _set_header(data: bytearray, **fields: int) -> None:
    h = layout.Header.unpack(bytes(data[:64]))
    vals = {"major": h.major, "minor": h.minor, "required_features": h.required_features,
            "optional_features": h.optional_features, "alignment": h.alignment, **fields}
    data[:64] = layout.Header(**vals).pack()


def _flip_first_blob_byte(data: bytearray) -> None:
    data[layout.HEADER_SIZE] ^= 0x01  # data_start is 64 with the default alignment


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--only")
    ap.add_argument("--force", action="store_true")
    args = ap.parse_args()
    VECTORS.mkdir(parents=True, exist_ok=True)

    def exact_basic(p: Path) -> None:
        llmc_format.save_file(_basic_tensors(), p, metadata={"purpose": "conformance", "n": 1})

    def lossy_vvc(p: Path) -> None:
        llmc_format.save_file(_lossy_tensors(), p, codec="vvc", qp=32, jobs=1)

    def lossy_vvc_blockdct(p: Path) -> None:
        # core blocks, an edge band of 4 rows and an edge strip of 10 columns (spec §7.5)
        rng = np.random.default_rng(7)
        w = (rng.laplace(size=(100, 170)) * 0.03).astype(np.float32)
        llmc_format.save_file({"mlp.weight": w, "attn.weight.bf16": w[:64, :96].astype(
            ml_dtypes.bfloat16)}, p, codec="vvc", qp=30, transform="dct", min_lossy_numel=1024,
            jobs=1)

    def ggml_vector(p: Path) -> None:
        write_ggml_vector(p)

    def updated(p: Path) -> None:
        llmc_format.save_file({"t": np.arange(12, dtype=np.float32).reshape(3, 4)}, p)
        append_metadata_update(p, metadata={"user": {"updated": True}})

    valid = {"v1-exact-basic": exact_basic, "v1-lossy-vvc": lossy_vvc,
             "v1-metadata-update": updated, "v1-lossy-vvc-blockdct": lossy_vvc_blockdct,
             "v1-ggml": ggml_vector}
    for name, fn in valid.items():
        if args.only not in (None, name):
            continue
        if (VECTORS / f"{name}.llmc").exists() and not args.force:
            print(f"keep {name}")
            continue
        make_valid(name, fn)
        print(f"wrote {name}")
    invalid = {
        "bad-future-major": (lambda d: _set_header(d, major=2), "VersionError"),
        "bad-required-feature": (lambda d: _set_header(d, required_features=1), "VersionError"),
        "bad-truncated": (lambda d: d.__delitem__(slice(len(d) - 10, None)), "TruncatedError"),
        "bad-blob-bitflip": (_flip_first_blob_byte, "ChecksumError"),
    }
    for name, (patch, error) in invalid.items():
        if args.only not in (None, name):
            continue
        if (VECTORS / f"{name}.llmc").exists() and not args.force:
            print(f"keep {name}")
            continue
        make_invalid(name, "v1-exact-basic", patch, error)
        print(f"wrote {name}")


if __name__ == "__main__":
    main()
