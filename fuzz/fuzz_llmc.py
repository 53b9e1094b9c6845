"""Fuzz the llmc readers: libFuzzer via atheris (coverage-guided), or the pure-Python loop.

    # coverage-guided, one hour (see fuzz/README.md):
    python fuzz/fuzz_llmc.py fuzz/corpus -max_total_time=3600 -rss_limit_mb=4096 \\
        -artifact_prefix=fuzz/crashes/
    # no atheris: the mutational loop of harness.py
    python fuzz/fuzz_llmc.py --engine python --seconds 3600 --crashes fuzz/crashes

Either way the corpus starts from real archives (``harness.build_seeds``: exact tensors of
many dtypes with attachments and an alias, multi-blob tensors, a metadata-updated file,
one small tensor per available video codec, and spec/vectors/). A crash is any exception
other than an ``LlmcError``, resident memory growing past 64 MiB + 10x the input size, or
``unpack`` writing outside its output directory; the crashing input is saved with its
traceback.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def _seeds(corpus: Path, video: bool) -> list[bytes]:
    import harness

    made = harness.build_seeds(corpus / "seeds-src", video=video)
    corpus.mkdir(parents=True, exist_ok=True)
    for p in made:  # libFuzzer reads the corpus directory; seed it with copies
        dst = corpus / f"seed-{p.name}"
        if not dst.exists():
            dst.write_bytes(p.read_bytes())
    return [p.read_bytes() for p in made]


def run_atheris(argv: list[str], corpus: Path, video: bool) -> None:
    import atheris

    # Decoders and libraries first (uninstrumented: they are not what we fuzz), then llmc
    # under instrumentation so libFuzzer sees which of its branches an input reaches.
    import av  # noqa: F401
    import msgpack  # noqa: F401
    import numpy  # noqa: F401
    import torch  # noqa: F401
    import zstandard  # noqa: F401

    with atheris.instrument_imports(include=["llmc_format"]):
        import llmc_format
        import llmc_format.codecs.exact
        import llmc_format.codecs.video.codecs
        import llmc_format.codecs.video.decode
        import llmc_format.codecs.video.frames
        import llmc_format.pipeline.inspect
        import llmc_format.pipeline.unpack
        import llmc_format.pipeline.verify
        import llmc_format.quant.affine  # noqa: F401
    import harness

    seeds = _seeds(corpus, video)
    mutator = harness.Mutator(seeds)
    target = harness.Target()
    target.warm_up(seeds[0])

    def test_one_input(data: bytes) -> None:
        target(data)  # raises harness.Bug: libFuzzer saves the input and stops

    def custom_mutator(data: bytes, max_size: int, seed: int) -> bytes:
        rng = random.Random(seed)
        if rng.random() < 0.25:
            return atheris.Mutate(data, max_size)
        out, _ = mutator.mutate(data, rng)
        return out[:max_size]

    atheris.Setup([argv[0], str(corpus), *argv[1:]], test_one_input,
                  custom_mutator=custom_mutator)
    atheris.Fuzz()


def run_python(args: argparse.Namespace, corpus: Path) -> int:
    import harness

    seeds = _seeds(corpus, not args.no_video)
    stats = harness.fuzz_loop(seeds, seconds=args.seconds, max_execs=args.execs, seed=args.seed,
                              crash_dir=args.crashes, log=lambda m: print(m, flush=True))
    print(stats.summary())
    return 1 if stats.crashes or any(v != "ok" for v in stats.special.values()) else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("corpus", nargs="?", default=str(HERE / "corpus"))
    parser.add_argument("--engine", choices=["atheris", "python"], default="atheris")
    parser.add_argument("--seconds", type=float, default=None)
    parser.add_argument("--execs", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--crashes", default=str(HERE / "crashes"))
    parser.add_argument("--no-video", action="store_true", help="seed without video codecs")
    args, rest = parser.parse_known_args()
    corpus = Path(args.corpus)
    if args.engine == "atheris":
        try:
            import atheris  # noqa: F401
        except ImportError:
            print("atheris is not installed (pip install atheris); using --engine python",
                  file=sys.stderr)
        else:
            run_atheris([sys.argv[0], *rest], corpus, not args.no_video)
            return 0
    if args.seconds is None and args.execs is None:
        args.seconds = 60.0
    return run_python(args, corpus)


if __name__ == "__main__":
    sys.exit(main())
