"""Does ``llmc repack`` keep activation-aware coding? SmolLM2-135M perplexity, kept vs dropped.

    OMP_NUM_THREADS=1 nice -n 10 python -m tools.bench_repack_actscale \\
        --pack-bpw 4 --repack-bpw 3 --work WORK --json out.json

1. Packs SmolLM2 (its Q4_1 GGUF) to ``--pack-bpw`` activation-aware, as ``llmc pack --codec
   vvc --bpw B --lossless model.embed_tokens.weight`` does by default (self-calibration;
   the statistics and the pack are cached in ``--work``).
2. Repacks that archive to each ``--repack-bpw`` twice: (a) keeping each tensor's
   ``diagscale`` multipliers (``repack``, what the product does: allocation from the
   recorded activation-weighted samples) and (b) without them (``keep_multipliers=False``:
   the coding repack did before, allocated from samples measured afresh with plain MSE —
   the recorded ones were measured through the multipliers).
3. Perplexity of each (``tools/eval_ppl.py`` protocol: lee_background.cor, first
   ``--max-tokens`` tokens, 1024-token windows), the all-in bpw over the tensors the
   allocation decides, and the weighted SNR of the 210 decoder matrices against the GGUF.
4. The approximation a repack without RD samples would make (``rd.activation.
   weights_from_multipliers``): column weights recovered from the stored multipliers vs
   the ones computed from the statistics, per tensor — the relative error of the recovered
   weights on the columns the clip did not touch, how many were clipped, and the relative
   change of the activation-weighted MSE of the pack's real coding error Σ u_j e_ij² when
   the recovered weights replace the true ones.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

import llmc_format
from llmc_format.container.reader import Reader
from llmc_format.io import open_source
from llmc_format.io.archive_source import ArchiveSource
from llmc_format.pipeline.policy import Policy
from llmc_format.pipeline.target import Target, pack_to_target, repack
from llmc_format.rd.activation import ALPHA, CLIP, column_weights, weights_from_multipliers
from llmc_format.rd.calibration import SELF, Statistics, statistics
from tools.bench_rd import evaluate
from tools.models import smollm2_decoder_linear_weights, smollm2_gguf_path


def inversion_check(path: Path, stats: Statistics, ref: dict[str, np.ndarray]
                    ) -> dict[str, Any]:
    """Recovered vs true column weights of every diagscale tensor of ``path`` (item 4)."""
    low, high = CLIP ** (-1.0 / ALPHA), CLIP ** (1.0 / ALPHA)  # the clip's bounds on u
    rel_u, clipped, rel_d, columns = [], 0, [], 0
    with ArchiveSource(path) as src, llmc_format.safe_open(path) as f:
        for name, scales in src.diagscales().items():
            u = column_weights(stats.input_power[name])
            v = weights_from_multipliers(scales.cols, ALPHA, CLIP)
            inside = (u > low) & (u < high)  # (both have mean 1)
            clipped += int((~inside).sum())
            columns += u.size
            rel_u.append(float(np.max(np.abs(v[inside] / u[inside] - 1))))
            if name in ref:
                e2 = ((f.get_tensor(name).astype(np.float64) - ref[name]) ** 2).sum(axis=0)
                true = float(e2 @ u)
                rel_d.append(abs(float(e2 @ v) - true) / true if true > 0 else 0.0)
    return {"tensors": len(rel_u), "columns": columns, "clipped_columns": clipped,
            "max_rel_err_unclipped_u": max(rel_u, default=None),
            "max_rel_change_weighted_mse": max(rel_d, default=None),
            "mean_rel_change_weighted_mse": float(np.mean(rel_d)) if rel_d else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pack-bpw", type=float, default=4.0)
    ap.add_argument("--repack-bpw", default="3", help="comma list of repack targets")
    ap.add_argument("--variants", default="kept,dropped", help="repacks to run: kept, dropped")
    ap.add_argument("--no-pack-eval", action="store_true",
                    help="skip the perplexity of the pack itself (and the weights check)")
    ap.add_argument("--preset", default="faster")
    ap.add_argument("--work", type=Path, required=True, help="cache of statistics and pack")
    ap.add_argument("--max-tokens", type=int, default=8192)
    ap.add_argument("--jobs", type=int, default=None)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    gguf = smollm2_gguf_path()
    ref = smollm2_decoder_linear_weights()
    rows: list[dict[str, Any]] = []

    def report(what: str, fig: dict[str, Any], seconds: float) -> None:
        rows.append({"what": what, **fig, "seconds": round(seconds, 1)})
        print(f"{what:40s} {json.dumps(fig)}  ({seconds:.0f} s)", flush=True)
        if args.json:  # as it goes: a run cut short keeps its rows
            args.json.write_text(json.dumps(rows, indent=1))

    cache = args.work / f"statistics-self-{gguf.stat().st_size}.json"
    packed = args.work / f"pack-bpw{args.pack_bpw:g}.llmc"
    with open_source(gguf) as source:
        if cache.exists():
            stats = Statistics.from_json(json.loads(cache.read_text()))
        else:
            t0 = time.time()
            stats = statistics(source, SELF)
            cache.with_suffix(".tmp").write_text(json.dumps(stats.to_json()))
            cache.with_suffix(".tmp").replace(cache)
            report("calibration self", {}, time.time() - t0)
        if not packed.exists():
            t0 = time.time()
            tmp = packed.with_suffix(".tmp.llmc")
            s = pack_to_target(source, tmp, Target.parse(bpw=args.pack_bpw), jobs=args.jobs,
                               policy=Policy(codec="vvc", preset=args.preset,
                                             lossless_patterns=("model.embed_tokens.weight",)),
                               sensitivity=stats)
            tmp.replace(packed)
            report(f"pack --bpw {args.pack_bpw:g}",
                   {"rd_bpw_all_in": s["achieved"]["rd_bpw_all_in"],
                    "kept_exact": s["achieved"]["kept_exact_tensors"],
                    "activation_tensors": s["activation"]["tensors"]}, time.time() - t0)
    if not args.no_pack_eval:
        t0 = time.time()
        report(f"pack --bpw {args.pack_bpw:g} evaluated", evaluate(packed, ref, args.max_tokens),
               time.time() - t0)
        t0 = time.time()
        report("recovered column weights", inversion_check(packed, stats, ref), time.time() - t0)
    variants = [v for v in args.variants.split(",") if v]
    for bpw in [float(b) for b in args.repack_bpw.split(",") if b]:
        for keep in [v == "kept" for v in variants]:
            out = args.work / f"repack-bpw{bpw:g}-{'kept' if keep else 'dropped'}.llmc"
            t0 = time.time()
            s = repack(packed, out, Target.parse(bpw=bpw), jobs=args.jobs, keep_multipliers=keep)
            t1 = time.time()
            with Reader(out) as r:
                staged = sum(1 for e in r.index.tensors
                             if e.pipeline and e.pipeline[0]["id"] == "diagscale")
            fig = {**evaluate(out, ref, args.max_tokens),
                   "rd_bpw_all_in": s["achieved"]["rd_bpw_all_in"],
                   "lossy_tensors": s["achieved"]["lossy_tensors"],
                   "diagscale_tensors": staged, "passes": s["passes"],
                   "within_tolerance": s.get("within_tolerance", True),
                   "repack_seconds": round(t1 - t0, 1)}
            report(f"repack --bpw {bpw:g} multipliers {'kept' if keep else 'dropped'}", fig,
                   time.time() - t0)


if __name__ == "__main__":
    main()
