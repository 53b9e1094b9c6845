"""Which part of a lossy SmolLM2 archive's error costs what perplexity (issue 15, --bpw 3).

    PYTHONPATH=. python research/probe_error_split.py ARCHIVE.llmc [--threads 1]

Decodes the archive (packed from SmolLM2's GGUF by ``tools.bench_gguf``), then measures
perplexity (``tools.eval_ppl``'s protocol) twice: with the token embedding put back to the
source's values (the decoder's error alone) and with every decoder tensor put back (the
embedding's error alone). It also prints what the RD allocation predicted for each part:
Σ s·n·MSE over its lossy tensors, with s the self-calibration sensitivity recorded in
``--sensitivity`` (``tools.bench_gguf`` caches it in its --work dir) and the MSE each
tensor's index entry records. If the weighting is right, the ratio of the predicted parts
is about the ratio of the measured log-perplexity increases.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import llmc_format
from llmc_format.codecs.stages import is_lossless
from llmc_format.container.reader import Reader
from llmc_format.io import open_source
from tools.models import smollm2_gguf_path

EMB = "model.embed_tokens.weight"
SOURCE_PPL = 26.78


def predicted(archive: Path, sensitivity: dict[str, float]) -> dict[str, float]:
    """Σ s·n·MSE over the lossy tensors of the embedding and of the decoder."""
    out = {"embedding": 0.0, "decoder": 0.0}
    with Reader(archive) as r:
        for e in r.index.tensors:
            if e.alias_of is None and not is_lossless(e.pipeline):
                key = "embedding" if e.name == EMB else "decoder"
                out[key] += sensitivity[e.name] * e.numel * float(e.rd["mse"])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("archive", type=Path)
    ap.add_argument("--sensitivity", type=Path, help="tools.bench_gguf's cached JSON")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--max-tokens", type=int, default=8192)
    args = ap.parse_args()
    import torch

    import tools.eval_ppl
    from tools.eval_ppl import perplexity_with_weights

    torch.set_num_threads(args.threads)
    tools.eval_ppl.N_THREADS = args.threads
    if args.sensitivity:
        p = predicted(args.archive, json.loads(args.sensitivity.read_text()))
        print(f"predicted Σ s·n·MSE: embedding {p['embedding']:.4g}, decoder {p['decoder']:.4g}, "
              f"ratio {p['embedding'] / p['decoder']:.3f}", flush=True)
    with llmc_format.safe_open(args.archive) as f:
        decoded = {k: np.asarray(f.get_tensor(k), dtype=np.float32) for k in f.keys()
                   if k != "lm_head.weight"}
    with open_source(smollm2_gguf_path()) as src:
        ref = {n: np.asarray(e(), dtype=np.float32) for n, e in src.tensors()}
    dec_only = perplexity_with_weights({**decoded, EMB: ref[EMB]}, max_tokens=args.max_tokens)
    emb_only = perplexity_with_weights({**ref, EMB: decoded[EMB]}, max_tokens=args.max_tokens)
    both = perplexity_with_weights(decoded, max_tokens=args.max_tokens)
    for label, ppl in (("decoder error alone", dec_only), ("embedding error alone", emb_only),
                       ("both", both)):
        print(f"{label:22s} ppl {ppl:8.2f}  Δ log-ppl {math.log(ppl / SOURCE_PPL):.3f}", flush=True)
    print(f"measured ratio embedding/decoder: "
          f"{math.log(emb_only / SOURCE_PPL) / math.log(dec_only / SOURCE_PPL):.3f}")


if __name__ == "__main__":
    main()
