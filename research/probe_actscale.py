"""Activation-aware coding at one rate: which column exponent α (``rd.activation``).

    python -m research.probe_actscale --bpw 2.977 --alphas 0.5,0.25,0 [--work DIR]

SmolLM2-135M packed by the product's own target pack (``pack_to_target``: blockdct +
vvc, RD allocation, the token embedding pinned exact as in ``tools.bench_rd``, the
diagscale stage with column multipliers (E[x_j²]/mean)^−α and the
activation-weighted MSE as the allocator's distortion), with the self-calibration
statistics computed once and cached in ``--work``; each pack is decoded and scored with
``tools.bench_rd.evaluate`` (the ``tools/eval_ppl.py`` protocol). ``plain`` in
``--alphas`` is the pack without activation-aware coding (``activation_alpha=None``).

``--data-free``: the fallback question — without calibration (``--weighting nmse``), does a
weight-only proxy of E[x_j²] help? Each tensor is weighted by nmse (numel / Σx²) and the
inputs of q/k/v (gate/up) are proxied by the squared gains γ_j² of the RMSNorm before them
(``input_layernorm`` / ``post_attention_layernorm``); o_proj and down_proj get no proxy.
Set ``OMP_NUM_THREADS=1`` on a busy machine: two OpenMP threads spinning at a barrier
made the token-by-token generation of the calibration ~10x slower there.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from llmc_format.io import open_source
from llmc_format.pipeline.policy import Policy
from llmc_format.pipeline.target import Target, pack_to_target
from llmc_format.rd.calibration import SELF, Statistics, statistics
from tools.bench_rd import evaluate
from tools.models import smollm2_decoder_linear_weights, smollm2_gguf_path


def norm_proxy(src: Any) -> Statistics:
    """nmse sensitivities and RMSNorm-gain proxies of the q/k/v/gate/up inputs' power."""
    import numpy as np

    tensors = {n: np.asarray(e(), dtype=np.float64) for n, e in src.tensors()}
    sens = {n: x.size / max(float(np.sum(x * x)), 1e-30) for n, x in tensors.items()}
    power = {}
    for n in tensors:
        parts = n.split(".")
        if len(parts) < 5 or parts[0] != "model" or parts[1] != "layers":
            continue
        layer = f"model.layers.{parts[2]}"
        if parts[-2] in ("q_proj", "k_proj", "v_proj"):
            power[n] = tensors[f"{layer}.input_layernorm.weight"] ** 2
        elif parts[-2] in ("gate_proj", "up_proj"):
            power[n] = tensors[f"{layer}.post_attention_layernorm.weight"] ** 2
    return Statistics(sens, power)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bpw", type=float, default=3.0)
    ap.add_argument("--alphas", default="0.5,0.25,0")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "llmc-probe-actscale")
    ap.add_argument("--data-free", action="store_true",
                    help="nmse weighting with RMSNorm-gain proxies instead of calibration")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    gguf = smollm2_gguf_path()
    ref = smollm2_decoder_linear_weights()
    cache = args.work / f"statistics-self-{gguf.stat().st_size}.json"
    rows: list[dict[str, Any]] = []
    with open_source(gguf) as src:
        if args.data_free:
            st = norm_proxy(src)
        elif cache.exists():
            st = Statistics.from_json(json.loads(cache.read_text()))
        else:
            t0 = time.time()
            st = statistics(src, SELF)
            cache.write_text(json.dumps(st.to_json()))
            print(f"calibration {time.time() - t0:.0f} s", flush=True)
        for a in args.alphas.split(","):
            alpha = None if a == "plain" else float(a)
            t0 = time.time()
            out = args.work / f"a{a}.llmc"
            summary = pack_to_target(src, out, Target.parse(bpw=args.bpw),
                                     policy=Policy(codec="vvc", preset="faster",
                                                   lossless_patterns=("model.embed_tokens.weight",)),
                                     calibration=None if args.data_free else SELF,
                                     sensitivity=st, activation_alpha=alpha)
            t1 = time.time()
            row = {"alpha": a, **evaluate(out, ref, 8192), "passes": summary["passes"],
                   "pack_s": round(t1 - t0), "total_s": round(time.time() - t0)}
            rows.append(row)
            print(json.dumps(row), flush=True)
            out.unlink()
            if args.json:
                args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
