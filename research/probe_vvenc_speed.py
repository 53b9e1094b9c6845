"""libvvenc speed vs quality of -vvenc-params keys on real weights (SmolLM2-135M, one layer).

Why: the encoder is most of `llmc pack`'s CPU; this finds settings that cut it without
losing SNR at equal bits per weight (issue 7). Each setting is appended to a base of
``-preset faster -qpa 0 -g 1 -vvenc-params DepQuant=1:SignHideFlag=0`` and compared with
the base at equal rate (SNR interpolated linearly in bpw); "bitstream"/"luma" say whether
the key changed anything at all. Per-tensor 10-bit codes, frames as llmc plans them, one
FFmpeg process at a time with one thread; CPU = getrusage(RUSAGE_CHILDREN) around each
encode; "dec M w/CPU s" is llmc's own in-process decode (``decode.decode_frame``, PyAV,
one thread) timed with the thread's CPU clock, since a setting can make the bitstream
cheaper to decode too. Results are cached per (setting, QP, tensor) in ``--cache-dir``.

    python -m research.probe_vvenc_speed --layer 15 --qps 15 20 24 28 \
        --params "" "MinQTISlice=16" "MinQTISlice=16:IntraEstDecBit=4:ALF=0:CCALF=0"
"""
from __future__ import annotations

import argparse
import hashlib
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from llmc_format.codecs.video import ffmpeg
from llmc_format.codecs.video import frames as framing
from llmc_format.codecs.video.codecs import raw_frame

DIR = Path(tempfile.gettempdir()) / "llmc-vvenc-probe"
CACHE = DIR / "results.jsonl"
BASE = "DepQuant=1:SignHideFlag=0"
PIX = "yuv420p10le"


def load(layer: int) -> dict[str, np.ndarray]:
    """SmolLM2 layer ``layer``'s 7 Linear weights (cached as .npz: the GGUF load is slow)."""
    path = DIR / f"l{layer}.npz"
    if not path.exists():
        from tools.models import smollm2_decoder_linear_weights

        DIR.mkdir(parents=True, exist_ok=True)
        np.savez(path, **smollm2_decoder_linear_weights(layers=[layer]))
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def child_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def decode_luma(blob: bytes, w: int, h: int) -> tuple[np.ndarray, float]:
    """The decoded luma plane, and the CPU seconds llmc's decoder took for it."""
    from llmc_format.codecs.video import decode

    t0 = time.thread_time()
    luma = decode.decode_frame(blob, decode.FrameFormat("vvc", "", w, h, PIX), "probe")
    return luma, time.thread_time() - t0


def vparams(extra: str) -> str:
    return BASE + (":" + extra if extra else "")


def encode_tensor(codes: np.ndarray, qp: int, extra: str
                  ) -> tuple[int, np.ndarray, float, float, str, str]:
    rows, cols = codes.shape
    geom = framing.plan(rows, cols, max_width=4096, max_height=4096, target_pixels=1 << 20,
                        align=8, min_size=16)
    out = np.empty_like(codes)
    nbytes, cpu, dec_cpu = 0, 0.0, 0.0
    hb, hl = hashlib.sha1(), hashlib.sha1()
    args = ["-preset", "faster", "-qp", str(qp), "-qpa", "0", "-g", "1",
            "-vvenc-params", vparams(extra)]
    for k, frame in enumerate(framing.split(codes, geom)):
        h, w = frame.shape
        raw = raw_frame(frame.astype("<u2"), PIX, 10)
        t0 = child_cpu()
        blob = ffmpeg.encode_frame("libvvenc", PIX, w, h, raw, args, "vvc", threads=1, what="probe")
        cpu += child_cpu() - t0
        luma, dc = decode_luma(blob, w, h)
        dec_cpu += dc
        framing.place(out, luma, geom, k, (0, rows, 0, cols))
        nbytes += len(blob)
        hb.update(blob)
        hl.update(luma.tobytes())
    return nbytes, np.minimum(out, 1023), cpu, dec_cpu, hb.hexdigest()[:16], hl.hexdigest()[:16]


def load_cache() -> dict[str, dict]:
    out = {}
    if CACHE.exists():
        for line in CACHE.read_text().splitlines():
            if line.strip():
                d = json.loads(line)
                out[d["key"]] = d
    return out


def point(weights, cache, extra: str, qp: int, rerun: bool = False) -> dict:
    tot = {"bytes": 0, "sse": 0.0, "cpu": 0.0, "dec": 0.0, "n": 0, "sig": 0.0, "hb": "", "hl": ""}
    for name, x in weights.items():
        key = f"{extra}|{qp}|{name}"
        if key not in cache or rerun or "dec" not in cache[key]:
            lo, hi = float(x.min()), float(x.max())
            scale = (hi - lo) / 1023.0
            codes = np.clip(np.rint((x.astype(np.float64) - lo) / scale), 0, 1023).astype(np.uint16)
            nbytes, dec, cpu, dec_cpu, hb, hl = encode_tensor(codes, qp, extra)
            xhat = lo + dec.astype(np.float64) * scale
            d = {"key": key, "extra": extra, "qp": qp, "name": name, "bytes": nbytes,
                 "sse": float(np.sum((x.astype(np.float64) - xhat) ** 2)),
                 "sig": float(np.sum(x.astype(np.float64) ** 2)), "n": int(x.size),
                 "cpu": cpu, "dec": dec_cpu, "hb": hb, "hl": hl, "time": time.time()}
            if rerun and key in cache:
                d["cpu_prev"] = cache[key].get("cpu")
            cache[key] = d
            with CACHE.open("a") as f:
                f.write(json.dumps(d) + "\n")
        d = cache[key]
        for k in ("bytes", "sse", "cpu", "dec", "n", "sig"):
            tot[k] += d[k]
        tot["hb"] += d["hb"][:4]
        tot["hl"] += d["hl"][:4]
    tot["bpw"] = tot["bytes"] * 8 / tot["n"]
    tot["snr"] = 10 * np.log10(tot["sig"] / tot["sse"])
    return tot


def interp(pts: list[tuple[float, float]], bpw: float) -> float:
    pts = sorted(pts)
    xs = [p[0] for p in pts]
    ys = [p[1] for p in pts]
    if bpw < xs[0] or bpw > xs[-1]:
        # linear extrapolation from the two nearest points (flagged by caller)
        i = 0 if bpw < xs[0] else len(xs) - 2
        x0, x1, y0, y1 = xs[i], xs[i + 1], ys[i], ys[i + 1]
        return y0 + (y1 - y0) * (bpw - x0) / (x1 - x0)
    return float(np.interp(bpw, xs, ys))


def main() -> None:
    global DIR, CACHE
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--layer", type=int, default=15)
    ap.add_argument("--cache-dir", type=Path, default=DIR)
    ap.add_argument("--qps", type=int, nargs="+", default=[20, 24, 28])
    ap.add_argument("--params", nargs="+", default=[""])
    ap.add_argument("--base-qps", type=int, nargs="+", default=None,
                    help="QPs of the base curve (default: --qps)")
    ap.add_argument("--rerun", action="store_true", help="re-encode even if cached")
    ap.add_argument("--no-rerun-extra", dest="rerun_extra", action="store_false")
    ap.add_argument("--targets", type=float, nargs="+", default=[2.0, 3.0, 4.0])
    args = ap.parse_args()
    DIR, CACHE = args.cache_dir, args.cache_dir / f"results-l{args.layer}.jsonl"
    weights = load(args.layer)
    cache = load_cache()
    base_qps = args.base_qps or args.qps
    base = {q: point(weights, cache, "", q, rerun=args.rerun) for q in base_qps}
    base_curve = [(p["bpw"], p["snr"]) for p in base.values()]
    base_cpu = np.mean([p["cpu"] for p in base.values()])
    n = next(iter(base.values()))["n"]
    print(f"base ({BASE}): " + ", ".join(f"QP{q}: {p['bpw']:.3f} bpw {p['snr']:.2f} dB "
                                          f"{p['cpu']:.2f} s" for q, p in base.items()))
    base_dec = np.mean([p["dec"] for p in base.values()])
    print(f"base decode: {n / base_dec / 1e6:.2f} M w/CPU s")
    print(f"\n| -vvenc-params (after {BASE}) | QPs | CPU s/pt | CPU vs base | M w/CPU s | dec M w/CPU s | "
          + " | ".join(f"ΔSNR@{t:g}" for t in args.targets) + " | bitstream | luma |")
    print("|---|---|---|---|---|---|" + "---|" * len(args.targets) + "---|---|")
    for extra in args.params:
        try:
            again = args.rerun and extra != "" and args.rerun_extra
            pts = {q: point(weights, cache, extra, q, rerun=again) for q in args.qps}
        except Exception as exc:  # rejected key
            msg = " ".join(str(exc).split())[-160:]
            print(f"| {extra or '(base)'} | rejected: {msg} |")
            sys.stdout.flush()
            continue
        curve = [(p["bpw"], p["snr"]) for p in pts.values()]
        cpu = np.mean([p["cpu"] for p in pts.values()])
        dec = np.mean([p["dec"] for p in pts.values()])
        same_qps = [q for q in args.qps if q in base]
        hb = all(pts[q]["hb"] == base[q]["hb"] for q in same_qps) if same_qps else None
        hl = all(pts[q]["hl"] == base[q]["hl"] for q in same_qps) if same_qps else None
        cpu_b = np.mean([base[q]["cpu"] for q in same_qps]) if same_qps else base_cpu
        deltas = []
        for t in args.targets:
            flag = "" if (min(c[0] for c in curve) <= t <= max(c[0] for c in curve)
                          and min(c[0] for c in base_curve) <= t <= max(c[0] for c in base_curve)) else "*"
            if len(curve) >= 2:
                deltas.append(f"{interp(curve, t) - interp(base_curve, t):+.3f}{flag}")
            else:  # one point: compare it to the base curve at its own rate
                b, s = curve[0]
                deltas.append(f"{s - interp(base_curve, b):+.3f}@{b:.2f}")
        print(f"| {extra or '(base)'} | {' '.join(map(str, args.qps))} | {cpu:.2f} | "
              f"{cpu / cpu_b:.2f}x | {n / cpu / 1e6:.3f} | {n / dec / 1e6:.2f} | " + " | ".join(deltas)
              + f" | {'identical' if hb else 'differs'} | {'identical' if hl else 'differs'} |")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
