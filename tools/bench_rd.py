"""RD-optimized allocation vs one uniform QP vs RTN / HQQ / NNCodec, in perplexity (SmolLM2-135M).

    python -m tools.bench_rd [--qps 39,35,32,26] [--skip nncodec,hqq] [--max-tokens 8192]

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
from llmc_format.pipeline.target import Target, measure_source, pack_to_target, with_target_scaling
from llmc_format.rd.calibration import SELF
from llmc_format.runtime import default_jobs
from tools.baselines import snr_db
from tools.eval_ppl import perplexity_with_weights
from tools.models import lee_text, smollm2_decoder_linear_weights, smollm2_gguf_path


def lossy_figures(path: Path) -> tuple[float, set[str]]:
    """All-in bits per lossy weight of an archive and the names of its lossy tensors."""
    with Reader(path) as r:
        lossy = {e.name for e in r.index.tensors if e.alias_of is None and len(e.pipeline) > 1}
        lossless = sum(e.stored_bytes for e in r.index.tensors if e.name not in lossy)
        att = sum(a.blob.length for a in r.attachments())
        n = sum(r.tensor(k).numel for k in lossy)
        return 8 * (r.file_size - lossless - att) / n, lossy


def evaluate(path: Path, ref: dict[str, np.ndarray], max_tokens: int) -> dict[str, Any]:
    bpw, lossy = lossy_figures(path)
    with llmc_format.safe_open(path) as f:
        recon = {k: f.get_tensor(k).astype(np.float32) for k in sorted(lossy)}
    names = sorted(recon)
    return {"bpw": bpw, "snr_db": snr_db([ref[k] for k in names], [recon[k] for k in names]),
            "ppl": perplexity_with_weights(recon, max_tokens=max_tokens)}


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
        print(f"{method:28s} {fig['bpw']:6.3f} bpw  {fig['snr_db']:6.2f} dB  ppl {fig['ppl']:10.2f}"
              f"  ({seconds:.0f} s)", flush=True)

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
        for transform in args.transform.split(",") if "rd" not in skip else []:
            rd_policy = with_target_scaling(Policy(
                codec="vvc", preset=args.preset, transform=transform,
                affine=affine if transform == "none" else {}))
            # the RD samples depend on the policy only: measure once, reuse for every target
            plan = measure_source(source, rd_policy, args.jobs or default_jobs()) if points else None
            tag = "" if transform == "none" else f" {transform}"
            for bpw in points:
                for variant in args.variants.split(","):
                    t0 = time.time()
                    rd = Path(tmp) / f"rd{bpw}{variant}{transform}.llmc"
                    summary = pack_to_target(
                        source, rd, Target.parse(bpw=bpw), policy=rd_policy, jobs=args.jobs,
                        weighting=variant if variant in ("mse", "nmse") else "nmse",
                        calibration={"calibration": calibration, "self": SELF}.get(variant),
                        plan=copy.deepcopy(plan))
                    report(f"vvc RD{tag} {variant} @{bpw:.3f} ({summary['passes']} passes)",
                           evaluate(rd, ref, args.max_tokens), time.time() - t0)
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
