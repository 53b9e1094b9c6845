"""Activation-aware column scaling under RD allocation, prototyped outside the format.

    python -m research.probe_actscale --bpw 3.0 --alphas 0,0.25,0.35,0.5 [--work DIR]

What a ``diagscale`` stage does (decode x = y·diag(c), c stored as float16) is simulated
here: each decoder Linear weight W of SmolLM2 is replaced by Y = W / c with
c_j = float16(1 / s_j), s_j = (E[x_j²] / mean E[x²])^α (E[x_j²] from the self-calibration
pass, ``rd.calibration.statistics``), packed to ``--bpw`` by the ordinary target pack
(blockdct + vvc, RD allocation), decoded, multiplied back by c and scored
(``tools.eval_ppl`` protocol). The allocator's weight per tensor is the Fisher mass the
scaled-domain error meets: a uniform error of variance σ² on Y is an error σ²·c_j² on
column j of W, so w_i = mean_ij F_ij·c_j² (= the per-tensor Fisher at α = 0).
``--rows`` also scales rows by the output-side Fisher (r_i = (F_row_i / mean)^β).
The scales' bytes (float16, ~0.023 bpw on SmolLM2) are not in the bpw here: the product
counts them.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

import llmc_format
from llmc_format.io import open_source
from llmc_format.io.base import Source, TensorEntry
from llmc_format.pipeline.policy import Policy
from llmc_format.pipeline.target import Target, measure_source, pack_to_target, with_target_scaling
from llmc_format.rd.calibration import SELF, Statistics, statistics
from tools.bench_rd import lossy_figures
from tools.eval_ppl import perplexity_with_weights
from tools.models import smollm2_gguf_path


class Scaled(Source):
    """``inner`` with some 2-D tensors replaced by float32 ``W / (r ⊗ c)``."""

    def __init__(self, inner: Source, mult: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
        super().__init__(inner.path)
        self.inner, self.mult = inner, mult

    def tensors(self) -> Iterator[tuple[str, TensorEntry]]:
        for name, e in self.inner.tensors():
            if name not in self.mult:
                yield name, e
                continue
            r, c = self.mult[name]

            def read(e: TensorEntry = e, r: np.ndarray = r, c: np.ndarray = c) -> np.ndarray:
                w = np.asarray(e(), dtype=np.float32)
                return (w / r[:, None].astype(np.float32) / c[None, :].astype(np.float32)
                        ).astype(np.float32)
            yield name, TensorEntry(name, "float32", tuple(e.shape), read, e.file)

    def attachments(self) -> Iterator[tuple[str, bytes]]:
        return self.inner.attachments()

    def aliases(self) -> dict[str, str]:
        return self.inner.aliases()


def multipliers(st: Statistics, alpha: float, beta: float, clip: float
                ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    out = {}
    for n, p in st.input_power.items():
        rel = np.maximum(p / p.mean(), 1e-12)
        s = np.clip(rel ** alpha, 1 / clip, clip)
        c = (1 / s).astype(np.float16)
        fr = st.fisher_rows[n]
        rr = np.clip(np.maximum(fr / fr.mean(), 1e-12) ** beta, 1 / clip, clip)
        r = (1 / rr).astype(np.float16)
        out[n] = (r, c)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bpw", type=float, default=3.0)
    ap.add_argument("--alphas", default="0,0.25,0.35,0.5")
    ap.add_argument("--beta", type=float, default=0.0, help="row exponent (output Fisher)")
    ap.add_argument("--clip", type=float, default=1e6)
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "llmc-probe-actscale")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    gguf = smollm2_gguf_path()
    cache = args.work / "stats-self.json"
    with open_source(gguf) as src:
        if cache.exists():
            st = Statistics.from_json(json.loads(cache.read_text()))
        else:
            t0 = time.time()
            st = statistics(src, SELF)
            cache.write_text(json.dumps(st.to_json()))
            print(f"calibration {time.time() - t0:.0f} s", flush=True)
        rows: list[dict[str, Any]] = []
        for alpha in [float(a) for a in args.alphas.split(",")]:
            t0 = time.time()
            mult = multipliers(st, alpha, args.beta, args.clip)
            source = Scaled(src, mult)
            policy = with_target_scaling(Policy(codec="vvc", preset="faster"))
            plan = measure_source(source, policy, 2)
            weights = {}
            for n in plan.curves:
                r, c = mult[n]
                # mean_ij F_ij r_i² c_j², with F factored as rows x cols (rank one)
                fc, fr = st.fisher_cols[n], st.fisher_rows[n]
                f = np.outer(fr, fc) / max(fr.mean(), 1e-300)  # rank-1 model, mean = mean F
                weights[n] = float((f * (r.astype(np.float64)[:, None] ** 2)
                                    * (c.astype(np.float64)[None, :] ** 2)).mean())
            out = args.work / f"a{alpha}.llmc"
            summary = pack_to_target(source, out, Target.parse(bpw=args.bpw), policy=policy,
                                     sensitivity=weights, calibration=SELF, plan=plan)
            t1 = time.time()
            bpw, lossy = lossy_figures(out)
            with llmc_format.safe_open(out) as f:
                recon = {}
                for k in sorted(lossy):
                    r, c = mult[k]
                    recon[k] = (f.get_tensor(k).astype(np.float32) * r[:, None].astype(np.float32)
                                * c[None, :].astype(np.float32))
            ppl = perplexity_with_weights(recon)
            row = {"alpha": alpha, "beta": args.beta, "clip": args.clip, "bpw": bpw, "ppl": ppl,
                   "passes": summary["passes"], "pack_s": round(t1 - t0), "total_s": round(time.time() - t0)}
            rows.append(row)
            print(json.dumps(row), flush=True)
            out.unlink()
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
