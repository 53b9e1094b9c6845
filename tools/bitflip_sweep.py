"""Flip every bit of a real archive (or a reproducible sample) and check ``verify`` sees it.

    python tools/bitflip_sweep.py                      # build the default archive, all bits
    python tools/bitflip_sweep.py --no-video           # without the lossy VVC tensor
    python tools/bitflip_sweep.py --max-flips 20000 --seed 1 FILE.llmc

The format's claim (spec/FORMAT.md §4, §8) is that every byte of a file is covered by a
checksum or by a zero-padding rule, so ``llmc_format.verify(path).ok`` is False after any
single bit flip. The default archive holds exact tensors of several dtypes (float32,
bfloat16, float16, int64, bool, uint8, a 0-d and an empty tensor), an alias, two
attachments (one zstd-compressed, one raw) and, if the VVC encoder works, one lossy VVC
tensor (affine params blob + video frame). Prints flips tried / detected / seconds and
the undetected flips, if any; exits 1 if any flip went unnoticed.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import ml_dtypes
import numpy as np

import llmc_format
from llmc_format.errors import EncoderMissingError
from llmc_format.io.memory import MemorySource
from llmc_format.pipeline.pack import pack_source
from llmc_format.pipeline.policy import Policy
from llmc_format.pipeline.verify import verify


class _Model(MemorySource):
    """In-memory tensors plus attachments and a tied name, like a Hugging Face directory."""

    def __init__(self, tensors: dict[str, np.ndarray], attachments: dict[str, bytes],
                 aliases: dict[str, str]) -> None:
        super().__init__(tensors)
        self._atts, self._aliases = attachments, aliases

    def attachments(self) -> Iterator[tuple[str, bytes]]:
        return iter(sorted(self._atts.items()))

    def aliases(self) -> dict[str, str]:
        return dict(self._aliases)


def make_archive(path: Path, *, video: bool = True, tiny: bool = False) -> Path:
    """A small real archive; ``tiny`` keeps it to a few hundred bytes of data (for tests).

    With ``video`` one 32x32 float32 tensor is coded with VVC (if libvvenc is available).
    """
    rng = np.random.default_rng(7)
    w = (rng.standard_normal((4, 8) if tiny else (16, 16)) * 0.02).astype(np.float32)
    tensors: dict[str, np.ndarray] = {
        "w.f32": w,
        "w.bf16": w.astype(ml_dtypes.bfloat16),
        "ids.i64": np.arange(3, dtype=np.int64),
        "mask.bool": np.array([True, False, True]),
    }
    if not tiny:
        tensors |= {
            "w.f16": w.astype(np.float16),
            "q.u8": rng.integers(0, 256, size=(9,), dtype=np.uint8),
            "scalar": np.array(2.5, dtype=np.float64),
            "empty": np.zeros((0, 3), dtype=np.float32),
        }
    atts = {"config.json": b'{"layers": 1, "hidden": 16}' * (2 if tiny else 6),
            "tok.bin": bytes(rng.integers(0, 256, 8 if tiny else 24, dtype=np.uint8))}
    policy = Policy()
    if video:
        tensors["lossy.weight"] = (rng.standard_normal((32, 32)) * 0.05).astype(np.float32)
        policy = Policy(codec="vvc", lossy_patterns=("lossy.*",), min_lossy_numel=1 << 30)
    try:
        pack_source(_Model(tensors, atts, {"tied": "w.f32"}), path, policy=policy, jobs=1)
    except EncoderMissingError:
        if not video:
            raise
        return make_archive(path, video=False, tiny=tiny)
    return path


@dataclass
class SweepResult:
    file_bytes: int
    tried: int = 0
    detected: int = 0
    seconds: float = 0.0
    undetected: list[tuple[int, int]] = field(default_factory=list)  # (byte offset, bit)

    def summary(self) -> str:
        return (f"{self.file_bytes}-byte file: {self.tried} flips tried, {self.detected} "
                f"detected, {len(self.undetected)} undetected, {self.seconds:.1f} s")


def flips(n_bytes: int, max_flips: int | None, seed: int) -> list[tuple[int, int]]:
    """Every (byte, bit) of the file, or a reproducible random sample of ``max_flips``."""
    total = 8 * n_bytes
    if max_flips is None or max_flips >= total:
        return [(i // 8, i % 8) for i in range(total)]
    return [(i // 8, i % 8) for i in sorted(random.Random(seed).sample(range(total), max_flips))]


def structure_flips(path: Path) -> list[tuple[int, int]]:
    """Every bit of the header (first 64 bytes) and the footer (last 48)."""
    n = path.stat().st_size
    return [(i, b) for i in [*range(64), *range(n - 48, n)] for b in range(8)]


def sweep(path: Path, *, max_flips: int | None = None, seed: int = 0,
          workdir: Path | None = None, only: list[tuple[int, int]] | None = None) -> SweepResult:
    """Flip each chosen bit of ``path`` in a copy and run ``verify`` on it; ``only``
    gives the (byte, bit) flips to try instead of all of them or a sample."""
    original = path.read_bytes()
    if not verify(path).ok:
        raise SystemExit(f"{path} does not verify before any flip")
    result = SweepResult(len(original))
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        bad = Path(tmp) / "flipped.llmc"
        data = bytearray(original)
        for pos, bit in only if only is not None else flips(len(original), max_flips, seed):
            data[pos] ^= 1 << bit
            bad.write_bytes(data)
            data[pos] ^= 1 << bit
            result.tried += 1
            if verify(bad).ok:
                result.undetected.append((pos, bit))
            else:
                result.detected += 1
    result.seconds = time.perf_counter() - t0
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("archive", nargs="?", help="an existing .llmc file (default: build one)")
    parser.add_argument("--max-flips", type=int, default=None,
                        help="sample this many flips instead of all (reproducible with --seed)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-video", action="store_true", help="no lossy VVC tensor")
    parser.add_argument("--tiny", action="store_true", help="the few-hundred-byte test archive")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.archive:
            path = Path(args.archive)
        else:
            path = make_archive(Path(tmp) / "sweep.llmc", video=not args.no_video, tiny=args.tiny)
            with llmc_format.safe_open(path) as f:
                codecs = sorted({"+".join(c["id"] for c in f.info(k).get("pipeline", []))
                                 for k in f.keys()} - {""})
            print(f"archive: {path.stat().st_size} bytes, codecs {codecs}")
        result = sweep(path, max_flips=args.max_flips, seed=args.seed)
    print(result.summary())
    for pos, bit in result.undetected[:20]:
        print(f"  undetected: byte {pos} bit {bit}")
    return 1 if result.undetected else 0


if __name__ == "__main__":
    sys.exit(main())
