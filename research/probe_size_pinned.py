r"""Would filling a --size budget have been better? SmolLM2 at a size with tensors pinned exact.

    OMP_NUM_THREADS=1 PYTHONPATH=. python research/probe_size_pinned.py --size 84.6MB \
        --pin model.embed_tokens.weight --work W [--threads 1]

``llmc pack --size 84.6MB`` of SmolLM2's GGUF writes 80.9 MB: the allocation codes only the
token embedding lossy, at QP 0 (the finest libvvenc takes, ~6.0 bits/weight), and keeping it
exact (7.8 bits/weight) does not fit beside the exact decoder. Every file that fills the
budget keeps the embedding exact and codes decoder matrices lossy instead; the allocation
predicts such files worse (more weighted squared error). This packs the best of them — the same target
with ``--pin`` tensors kept exact (``--lossless``), self-calibrated and activation-aware as
the default pack — and measures its size and perplexity (``tools.eval_ppl``'s protocol),
to check the allocation's choice against the perplexity. ``--work``: a ``tools.bench_gguf``
work directory whose cached self-calibration statistics are used (computed there if absent).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from llmc_format.io import open_source
from llmc_format.pipeline.policy import Policy
from llmc_format.pipeline.target import Target, pack_to_target
from tools.bench_gguf import Bench, archive_perplexity


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", required=True)
    ap.add_argument("--pin", action="append", default=[], help="tensor name kept exact")
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--max-tokens", type=int, default=8192)
    args = ap.parse_args()
    import torch

    import tools.eval_ppl

    torch.set_num_threads(args.threads)
    tools.eval_ppl.N_THREADS = args.threads
    bench = Bench(argparse.Namespace(work=args.work, json=None, preset=None))
    policy = Policy(codec="vvc", lossless_patterns=tuple(args.pin))
    out = args.work / "pinned.llmc"
    t0 = time.time()
    with open_source(bench.gguf) as source:
        summary = pack_to_target(source, out, Target.parse(size=args.size), policy=policy,
                                 sensitivity=bench.sensitivity())
    a = summary["achieved"]
    print(f"{args.size} with {', '.join(args.pin) or 'nothing'} pinned exact: "
          f"{out.stat().st_size / 1e6:.2f} MB, {a['lossy_tensors']} lossy / "
          f"{a['kept_exact_tensors']} kept exact, in window: "
          f"{summary.get('within_tolerance', True)}, {time.time() - t0:.0f} s", flush=True)
    print(f"perplexity {archive_perplexity(out, args.max_tokens):.2f}")


if __name__ == "__main__":
    main()
