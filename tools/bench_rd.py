"""RD-optimized allocation vs one uniform QP vs RTN / HQQ / NNCodec, in perplexity (SmolLM2-135M).

    python -m tools.bench_rd [--qps 39,35,32,26] [--skip nncodec,hqq] [--max-tokens 8192]
    python -m tools.bench_rd --skip fp32,rtn,hqq,nncodec --qps "" --transform dct \
        --bpw-points 2,2.5,3,4 --variants self,self-plain --minilm-bpw 2,2.5,3,4 --json out.json

Variants (the weighting of the RD packs): ``self`` is what a target pack does by default
(``--calibration self``, activation-aware coding with ``--alpha``: ``rd.activation``);
``self-plain`` the same sensitivities without it (per-tensor weighting only: the
default before activation-aware coding); ``calibration`` a text (chars 100,000 on of
lee_background.cor, disjoint from the perplexity region), ``nmse``/``mse`` data-free.
The calibration statistics are computed once per text and timed (``calibration``
rows), the RD samples once per variant and transform (``samples`` rows).
``--minilm-bpw``: MiniLM-L6 packed to those targets (its 36 encoder matrices; the
embeddings pinned exact; weighting auto, which is nmse for an encoder), scored by the
mean cosine similarity of its sentence embeddings to float32's (``tools.eval_embed``).

For each uniform VVC QP, packs SmolLM2 from its GGUF with llmc (decoder Linear weights
lossy, everything else exact), measures the all-in bits per lossy weight it reaches, then
packs again with ``--bpw`` set to exactly that figure (RD allocation) so the two compare
at equal size. Baselines run on the same 210 matrices. One table: method, bits/weight,
weighted SNR over the lossy weights, perplexity on the first ``--max-tokens`` tokens of
lee_background.cor in 1024-token windows, wall time.
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

import llmc_format
from llmc_format.container.reader import Reader
from llmc_format.io import open_source
from llmc_format.pipeline.pack import pack_source
from llmc_format.pipeline.policy import Policy
from llmc_format.pipeline.target import (
    Target,
    activation_policy,
    measure_source,
    pack_to_target,
    with_target_scaling,
)
from llmc_format.rd.activation import ALPHA
from llmc_format.rd.calibration import SELF, Statistics, statistics
from llmc_format.runtime import default_jobs
from tools.baselines import snr_db
from tools.eval_ppl import perplexity_with_weights
from tools.models import lee_text, minilm_dir, smollm2_decoder_linear_weights, smollm2_gguf_path

#: variant -> (weighting, calibration text key, activation-aware)
VARIANTS = {"self": ("nmse", "self", True), "self-plain": ("nmse", "self", False),
            "calibration": ("nmse", "calibration", True),
            "calibration-plain": ("nmse", "calibration", False),
            "nmse": ("nmse", None, False), "mse": ("mse", None, False)}


def lossy_figures(path: Path) -> tuple[float, set[str]]:
    """All-in bits per lossy weight of an archive and the names of its lossy tensors."""
    with Reader(path) as r:
        lossy = {e.name for e in r.index.tensors if e.alias_of is None and len(e.pipeline) > 1}
        lossless = sum(e.stored_bytes for e in r.index.tensors if e.name not in lossy)
        att = sum(a.blob.length for a in r.attachments())
        n = sum(r.tensor(k).numel for k in lossy)
        return 8 * (r.file_size - lossless - att) / n, lossy


def evaluate(path: Path, ref: dict[str, np.ndarray], max_tokens: int) -> dict[str, Any]:
    """bpw of the lossy tensors (``lossy_figures``), SNR over the reference's matrices (a
    kept-exact one: no error), perplexity with the lossy tensors decoded."""
    bpw, lossy = lossy_figures(path)
    with llmc_format.safe_open(path) as f:
        recon = {k: f.get_tensor(k).astype(np.float32) for k in sorted(lossy)}
    names = sorted(ref) if set(recon) <= set(ref) else sorted(recon)
    recon = {**{k: ref[k] for k in names if k not in recon}, **recon}
    return {"bpw": bpw, "snr_db": snr_db([ref[k] for k in names], [recon[k] for k in names]),
            "ppl": perplexity_with_weights(recon, max_tokens=max_tokens)}


def minilm_figures(path: Path) -> dict[str, Any]:
    """All-in bits per lossy weight of a MiniLM archive, weighted SNR of its lossy
    tensors, and the mean cosine similarity of its sentence embeddings to float32's."""
    from safetensors.numpy import load_file

    from tools.eval_embed import cosine_to_float32

    bpw, lossy = lossy_figures(path)
    ref = load_file(str(minilm_dir() / "model.safetensors"))
    with llmc_format.safe_open(path) as f:
        recon = {k: f.get_tensor(k).astype(np.float32) for k in sorted(lossy)}
    names = sorted(recon)
    return {"bpw_lossy_only": bpw, "lossy_tensors": len(names),
            "snr_db": snr_db([ref[k] for k in names], [recon[k] for k in names]),
            "cosine": cosine_to_float32(recon)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--qps", default="39,37,34,28",
                    help="uniform VVC QPs (one RD run each); the defaults land near 2.0, 2.5, "
                    "3.0 and 4.0 bits per weight")
    ap.add_argument("--preset", default="faster")
    ap.add_argument("--variants", default="calibration,self,nmse",
                    help="RD weightings to run at each point: nmse, mse, calibration (a text), "
                    "self (text the model samples itself)")
    ap.add_argument("--bpw-points", default="",
                    help="comma list of bits/weight targets to run RD at without a uniform run")
    ap.add_argument("--calibration-chars", type=int, default=60000,
                    help="calibration text: this many characters of lee_background.cor taken "
                    "after the perplexity region (chars 100000 on)")
    ap.add_argument("--granularity", default=None, choices=("row", "tensor"),
                    help="affine granularity of the RD packs (default: llmc's, tensor)")
    ap.add_argument("--transform", default="none,dct",
                    help="comma list of RD pack transforms to run (none: affine codes; dct: "
                    "llmc pack --transform dct)")
    ap.add_argument("--skip", default="", help="comma list of: fp32, rd, rtn, hqq, nncodec")
    ap.add_argument("--lossless", default="model.embed_tokens.weight",
                    help="comma list of name patterns the RD packs keep exact (llmc pack "
                    "--lossless; default: the token embedding, so the bits count over the 210 "
                    "decoder Linear weights as in the uniform runs)")
    ap.add_argument("--alpha", type=float, default=ALPHA,
                    help="activation-aware column exponent of the activation-aware variants")
    ap.add_argument("--minilm-bpw", default="",
                    help="comma list of bits/weight targets to pack MiniLM-L6 to")
    ap.add_argument("--work", type=Path, default=None,
                    help="where the calibration statistics are cached (default: a temp dir)")
    ap.add_argument("--max-tokens", type=int, default=8192)
    ap.add_argument("--jobs", type=int, default=None)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    gguf = smollm2_gguf_path()
    ref = smollm2_decoder_linear_weights()
    rows: list[dict[str, Any]] = []

    def report(method: str, fig: dict[str, Any], seconds: float) -> None:
        row = {"method": method, **fig, "seconds": round(seconds, 1)}
        rows.append(row)
        if "ppl" in fig:
            print(f"{method:28s} {fig['bpw']:6.3f} bpw  {fig['snr_db']:6.2f} dB  "
                  f"ppl {fig['ppl']:10.2f}  ({seconds:.0f} s)", flush=True)
        else:
            print(f"{method:28s} {json.dumps(fig)}  ({seconds:.0f} s)", flush=True)
        if args.json:  # as it goes: a long run cut short keeps its rows
            args.json.write_text(json.dumps(rows, indent=1))

    if "fp32" not in skip:
        t0 = time.time()
        report("fp32", {"bpw": 32.0, "snr_db": float("inf"),
                        "ppl": perplexity_with_weights({}, max_tokens=args.max_tokens)},
               time.time() - t0)
    calibration = lee_text()[100000:100000 + args.calibration_chars]
    with tempfile.TemporaryDirectory() as tmp, open_source(gguf) as source:
        points: list[float] = [float(b) for b in args.bpw_points.split(",") if b]
        for qp in [int(q) for q in args.qps.split(",") if q]:
            policy = Policy(codec="vvc", qp=qp, preset=args.preset)
            t0 = time.time()
            uni = Path(tmp) / f"uniform{qp}.llmc"
            pack_source(source, uni, policy=policy, jobs=args.jobs)
            fig = evaluate(uni, ref, args.max_tokens)
            report(f"vvc uniform qp={qp}", fig, time.time() - t0)
            points.append(fig["bpw"])
        affine = {"granularity": args.granularity} if args.granularity else {}
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        texts = {"calibration": calibration, "self": SELF}
        stats: dict[str, Statistics] = {}

        def stats_of(key: str) -> Statistics:
            """Calibration statistics of text ``key``, computed once (cached in --work)."""
            if key not in stats:
                cache = work / f"statistics-{key}-{gguf.stat().st_size}.json"
                if cache.exists():
                    stats[key] = Statistics.from_json(json.loads(cache.read_text()))
                else:
                    t0 = time.time()
                    stats[key] = statistics(source, texts[key])
                    tmpf = cache.with_suffix(".tmp")
                    tmpf.write_text(json.dumps(stats[key].to_json()))
                    tmpf.replace(cache)
                    report(f"calibration {key}", {"what": "rd.calibration.statistics, "
                                                  "4 x 512 tokens"}, time.time() - t0)
            return stats[key]

        shapes = {n: tuple(e.shape) for n, e in source.tensors()}
        variants = [v for v in args.variants.split(",") if v]
        for transform in args.transform.split(",") if "rd" not in skip else []:
            rd_policy = with_target_scaling(Policy(
                codec="vvc", preset=args.preset, transform=transform,
                affine=affine if transform == "none" else {},
                lossless_patterns=tuple(p for p in args.lossless.split(",") if p)))
            tag = "" if transform == "none" else f" {transform}"
            for variant in variants if points else []:
                weighting, text, aware = VARIANTS[variant]
                st = stats_of(text) if text else None
                alpha = args.alpha if aware else None
                # the RD samples depend on the policy (and its diagscale) only: measure
                # once per variant, reuse for every target
                t0 = time.time()
                policy, colw = activation_policy(rd_policy, st, {
                    n: s for n, s in shapes.items() if rd_policy.is_lossy(n, "float32", s)}, alpha)
                plan = measure_source(source, policy, args.jobs or default_jobs(), col_weights=colw)
                report(f"samples{tag} {variant}", {"tensors": len(plan.curves),
                                                   "activation_aware": len(colw)}, time.time() - t0)
                for bpw in points:
                    t0 = time.time()
                    rd = Path(tmp) / f"rd{bpw}{variant}{transform}.llmc"
                    summary = pack_to_target(
                        source, rd, Target.parse(bpw=bpw), policy=rd_policy, jobs=args.jobs,
                        weighting=weighting, calibration=texts.get(text or ""),
                        sensitivity=st, activation_alpha=alpha, plan=copy.deepcopy(plan))
                    t1 = time.time()
                    fig = evaluate(rd, ref, args.max_tokens)
                    a = summary["achieved"]
                    # bits over every candidate (the 210 matrices), kept-exact ones included
                    # (``evaluate``'s bpw counts the lossy ones only)
                    fig = {**fig, "bpw": a["rd_bpw_all_in"], "bpw_lossy_only": fig["bpw"],
                           "kept_exact_tensors": a["kept_exact_tensors"],
                           "within_tolerance": summary.get("within_tolerance", True)}
                    report(f"vvc RD{tag} {variant} @{bpw:.3f} ({summary['passes']} passes)",
                           {**fig, "pack_seconds": round(t1 - t0, 1)}, time.time() - t0)
                    rd.unlink()
        for bpw in [float(b) for b in args.minilm_bpw.split(",") if b]:
            t0 = time.time()
            out = Path(tmp) / f"minilm{bpw}.llmc"
            with open_source(minilm_dir()) as mini:
                summary = pack_to_target(
                    mini, out, Target.parse(bpw=bpw), jobs=args.jobs,
                    policy=Policy(codec="vvc", preset=args.preset,
                                  lossless_patterns=("embeddings.*", "*.embeddings.*")))
            t1 = time.time()
            report(f"minilm vvc RD @{bpw:.3f} ({summary['passes']} passes)",
                   {**minilm_figures(out), "bpw": summary["achieved"]["rd_bpw_all_in"],
                    "kept_exact_tensors": summary["achieved"]["kept_exact_tensors"],
                    "weighting": summary["weighting"],
                    "pack_seconds": round(t1 - t0, 1)}, time.time() - t0)
    names = sorted(ref)
    if "rtn" not in skip:
        from tools.baselines.rtn import rtn_quantize

        for bits in (2, 3, 4):
            t0 = time.time()
            recon, bpws = {}, []
            for k in names:
                res = rtn_quantize(ref[k], bits=bits, group_size=128)
                recon[k] = res.dequantized
                bpws.append(res.bits_per_weight * ref[k].size)
            fig = {"bpw": sum(bpws) / sum(ref[k].size for k in names),
                   "snr_db": snr_db([ref[k] for k in names], [recon[k] for k in names]),
                   "ppl": perplexity_with_weights(recon, max_tokens=args.max_tokens)}
            report(f"rtn g128 {bits}-bit", fig, time.time() - t0)
    if "hqq" not in skip:
        from tools.baselines.hqq_adapter import quantize_matrix

        for bits in (2, 3, 4):
            t0 = time.time()
            recon, total = {}, 0.0
            for k in names:
                recon[k], bpw, _, _ = quantize_matrix(ref[k], nbits=bits, group_size=64)
                total += bpw * ref[k].size
            fig = {"bpw": total / sum(ref[k].size for k in names),
                   "snr_db": snr_db([ref[k] for k in names], [recon[k] for k in names]),
                   "ppl": perplexity_with_weights(recon, max_tokens=args.max_tokens)}
            report(f"hqq g64 {bits}-bit", fig, time.time() - t0)
    if "nncodec" not in skip:
        from tools.baselines.nncodec_adapter import compress_matrix

        for qp in (-12, -15, -17, -21):
            t0 = time.time()
            recon, nbytes = {}, 0
            for k in names:
                n, recon[k], _, _ = compress_matrix(ref[k], qp)
                nbytes += n
            fig = {"bpw": 8 * nbytes / sum(ref[k].size for k in names),
                   "snr_db": snr_db([ref[k] for k in names], [recon[k] for k in names]),
                   "ppl": perplexity_with_weights(recon, max_tokens=args.max_tokens)}
            report(f"nncodec qp={qp}", fig, time.time() - t0)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
